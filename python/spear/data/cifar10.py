"""CIFAR-10 from the original "python version" pickle batches.

Note: the batches are Python pickles, so only load files you trust.
"""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .base import as_root
from .images import ArrayImageDataset

__all__ = ["CIFAR10", "read_cifar_batch"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

_FILES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}


def _key(d: dict, name: str) -> Any:
    # The official files were pickled by Python 2 (bytes keys); accept str keys too.
    for k in (name.encode(), name):
        if k in d:
            return d[k]
    raise ValueError(f"CIFAR-10 batch has no {name!r} entry")


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one batch file -> (uint8 images (N, 3, 32, 32), int64 labels (N,)).

    Each row of ``data`` is 1024 red, then 1024 green, then 1024 blue bytes, row-major.
    """
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    data = np.asarray(_key(d, "data"), dtype=np.uint8)
    labels = np.asarray(_key(d, "labels"), dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise ValueError(f"{path}: expected data (N, 3072) and N labels, got {data.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def _batch_dir(root: Path) -> Path:
    nested = root / "cifar-10-batches-py"
    return nested if nested.is_dir() else root


class CIFAR10(ArrayImageDataset):
    """CIFAR-10, shape (3, 32, 32), the usual CIFAR-10 mean/std.

    ``root`` may be the batch folder itself or its parent holding
    ``cifar-10-batches-py``.  ``split``: "test" (``test_batch``) or "train"
    (``data_batch_1..5``); ``None`` means "test", falling back to "train" with a warning.
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        *,
        normalize: bool = True,
        image_size: int | None = None,
        split: str | None = None,
    ) -> None:
        path = _batch_dir(as_root(root, "CIFAR-10"))
        if split is None:
            split = "test"
            if not (path / "test_batch").is_file() and (path / "data_batch_1").is_file():
                warnings.warn(f"CIFAR-10: no test_batch in {path}; using the train split", stacklevel=2)
                split = "train"
        if split not in _FILES:
            raise ValueError(f"CIFAR-10: split must be 'test' or 'train', got {split!r}")
        for fname in _FILES[split]:
            if not (path / fname).is_file():
                raise FileNotFoundError(f"CIFAR-10: expected {fname} in {path}")
        parts = [read_cifar_batch(path / fname) for fname in _FILES[split]]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        self.split = split
        super().__init__(
            name="cifar10",
            images=images,
            scale=255.0,
            labels=labels,
            num_classes=10,
            normalize=normalize,
            mean=CIFAR10_MEAN,
            std=CIFAR10_STD,
            image_size=image_size,
            class_names=_class_names(path),
        )


def _class_names(path: Path) -> list[str] | None:
    meta = path / "batches.meta"
    if not meta.is_file():
        return None
    with open(meta, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    names = _key(d, "label_names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
