"""Dataset loaders reading the original on-disk formats, behind one interface.

>>> from spear.data import load_dataset
>>> ds = load_dataset("digits")                       # embedded, needs no files
>>> x, y, idx = ds.sample_batch(16, seed=0)           # x: (16, 64) float32 model inputs
>>> pixels = ds.to_pixels(x)                          # (16, 1, 8, 8), normalisation undone

Every loader takes ``(root, *, normalize=True, image_size=None, **options)``; extra
options (e.g. ``split``) are forwarded by :func:`load_dataset`.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from .adult import Adult, AdultSchema, CategoricalColumn, ContinuousColumn
from .base import Dataset, ImageDataset
from .cifar10 import CIFAR10
from .digits import Digits
from .imagenet import ImageNetSample
from .mnist import MNIST, read_idx
from .tiny_imagenet import TinyImageNet

__all__ = [
    "DATASETS",
    "ALIASES",
    "load_dataset",
    "Dataset",
    "ImageDataset",
    "MNIST",
    "CIFAR10",
    "TinyImageNet",
    "ImageNetSample",
    "Adult",
    "AdultSchema",
    "CategoricalColumn",
    "ContinuousColumn",
    "Digits",
    "read_idx",
]

# Canonical name -> loader (a Dataset subclass called as cls(root, normalize=..., ...)).
DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist": MNIST,
    "cifar10": CIFAR10,
    "tiny-imagenet": TinyImageNet,
    "imagenet": ImageNetSample,
    "adult": Adult,
    "digits": Digits,
}

ALIASES: dict[str, str] = {
    "tinyimagenet": "tiny-imagenet",
    "tiny_imagenet": "tiny-imagenet",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "imagenet-sample": "imagenet",
    "imagenet_sample": "imagenet",
}


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    normalize: bool = True,
    image_size: int | None = None,
    **options: Any,
) -> Dataset:
    """Load dataset ``name`` (case-insensitive; aliases accepted) from folder ``root``.

    ``root`` is required for everything except "digits".  Raises ValueError for an
    unknown name or a missing root, FileNotFoundError when expected files are absent.
    """
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if root is None and key != "digits":
        raise ValueError(f"dataset {key!r} needs root= pointing at its files")
    return DATASETS[key](root, normalize=normalize, image_size=image_size, **options)
