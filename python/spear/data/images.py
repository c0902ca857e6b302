"""Image helpers (Pillow + numpy only; torchvision is deliberately not used).

Two storage strategies share :class:`~spear.data.base.ImageDataset`:

* :class:`ArrayImageDataset` keeps small datasets (MNIST, CIFAR-10, digits) as an
  integer array in memory and converts only the requested samples to float.
* :class:`ImageFileDataset` keeps file paths and decodes JPEGs lazily in ``get``,
  because ImageNet crops at 720 px are 1.55e6 floats each and must never all be loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .base import ImageDataset

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ArrayImageDataset",
    "ImageFileDataset",
    "load_rgb",
    "resize_shorter_center_crop",
    "resize_chw",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Bilinear (antialiased in Pillow) is the torchvision default for Resize.
RESAMPLE = Image.Resampling.BILINEAR


def resize_shorter_center_crop(img: Image.Image, size: int) -> Image.Image:
    """Resize so the shorter side is ``size``, then centre-crop ``size x size``.

    Mirrors torchvision's ``Resize(size)`` + ``CenterCrop(size)`` arithmetic; a no-op
    for images that are already ``size x size``.
    """
    w, h = img.size
    if (w, h) != (size, size):
        if w <= h:
            new_w, new_h = size, max(size, int(size * h / w))
        else:
            new_w, new_h = max(size, int(size * w / h)), size
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), RESAMPLE)
        left = int(round((new_w - size) / 2.0))
        top = int(round((new_h - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    return img


def load_rgb(path: str | Path, size: int | None = None) -> np.ndarray:
    """Decode an image file to ``(3, H, W)`` float32 in [0, 1] (grayscale/CMYK -> RGB)."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        if size is not None:
            img = resize_shorter_center_crop(img, size)
        arr = np.asarray(img, dtype=np.uint8)
    return (arr.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0))


def resize_chw(x: np.ndarray, size: int) -> np.ndarray:
    """Bilinearly resize a float ``(C, H, W)`` image to ``(C, size, size)`` (per channel)."""
    if x.shape[1:] == (size, size):
        return x.astype(np.float32, copy=False)
    out = np.empty((x.shape[0], size, size), np.float32)
    for c in range(x.shape[0]):
        # Mode "F" keeps full float precision instead of quantising to uint8.
        plane = Image.fromarray(np.ascontiguousarray(x[c], dtype=np.float32), mode="F")
        out[c] = np.asarray(plane.resize((size, size), RESAMPLE), dtype=np.float32)
    return out


class ArrayImageDataset(ImageDataset):
    """In-memory images stored as integers ``(N, C, H, W)``; pixel = value / ``scale``.

    ``image_size`` (optional) bilinearly resizes the requested samples to a square.
    """

    def __init__(
        self,
        *,
        name: str,
        images: np.ndarray,
        scale: float,
        labels: np.ndarray,
        num_classes: int,
        normalize: bool,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if images.ndim != 4:
            raise ValueError(f"{name}: images must be (N, C, H, W), got {images.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{name}: {len(images)} images but {len(labels)} labels")
        c, h, w = images.shape[1:]
        self.images = images
        self.scale = float(scale)
        self.image_size = _check_size(name, image_size)
        self._native = (h, w)
        out_hw = (h, w) if self.image_size is None else (self.image_size, self.image_size)
        super().__init__(
            name=name,
            sample_shape=(c, *out_hw),
            num_classes=num_classes,
            labels=labels,
            normalize=normalize,
            mean=mean,
            std=std,
            class_names=class_names,
        )

    def _load(self, indices: np.ndarray) -> np.ndarray:
        # float32 division is correctly rounded, so value/scale is exact to 1/2 ulp.
        x = self.images[indices].astype(np.float32) / np.float32(self.scale)
        if self.image_size is not None and self._native != (self.image_size,) * 2:
            x = np.stack([resize_chw(img, self.image_size) for img in x])
        return x


class ImageFileDataset(ImageDataset):
    """Images decoded from ``paths`` only when requested (construction reads no pixels)."""

    def __init__(
        self,
        *,
        name: str,
        paths: Sequence[Path],
        labels: np.ndarray,
        num_classes: int,
        image_size: int,
        normalize: bool,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if len(paths) != len(labels):
            raise ValueError(f"{name}: {len(paths)} files but {len(labels)} labels")
        self.paths = [Path(p) for p in paths]
        self.image_size = _check_size(name, image_size)
        super().__init__(
            name=name,
            sample_shape=(3, self.image_size, self.image_size),
            num_classes=num_classes,
            labels=labels,
            normalize=normalize,
            mean=mean,
            std=std,
            class_names=class_names,
        )

    def _load(self, indices: np.ndarray) -> np.ndarray:
        # Preallocate: at 720 px a stack() would briefly need twice the memory.
        out = np.empty((len(indices), *self.sample_shape), np.float32)
        for k, i in enumerate(indices):
            out[k] = load_rgb(self.paths[i], self.image_size)
        return out


def _check_size(name: str, image_size: int | None) -> int | None:
    if image_size is None:
        return None
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"{name}: image_size must be a positive integer, got {image_size!r}")
    return int(image_size)
