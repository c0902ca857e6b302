"""MNIST from the original IDX files (gzipped or not)."""
from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import numpy as np

from .base import as_root
from .images import ArrayImageDataset

__all__ = ["MNIST", "read_idx", "IDX_IMAGES_MAGIC", "IDX_LABELS_MAGIC"]

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike, expected_magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file into a uint8 array of its declared shape.

    Gzip is detected from the file's first bytes, not its name.  Raises ValueError
    when the magic number differs from ``expected_magic`` or the file is truncated.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file")
    magic = int.from_bytes(raw[:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path}: bad IDX magic number {magic}, expected {expected_magic}")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    need = int(np.prod(dims))
    if len(raw) - header != need:
        raise ValueError(
            f"{path}: IDX header declares {dims} = {need} bytes but {len(raw) - header} follow"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def _find(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


class MNIST(ArrayImageDataset):
    """MNIST digits, shape (1, 28, 28), mean 0.1307 / std 0.3081.

    ``split``: "test" (10,000 images) or "train" (60,000).  The default ``None`` means
    "test", falling back to "train" with a warning when only the train files exist;
    an explicit split never falls back.
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        *,
        normalize: bool = True,
        image_size: int | None = None,
        split: str | None = None,
    ) -> None:
        path = as_root(root, "MNIST")
        if split is None:
            split = "test"
            if _find(path, _FILES["test"][0]) is None and _find(path, _FILES["train"][0]) is not None:
                warnings.warn(f"MNIST: no test files in {path}; using the train split", stacklevel=2)
                split = "train"
        if split not in _FILES:
            raise ValueError(f"MNIST: split must be 'test' or 'train', got {split!r}")
        files = []
        for stem in _FILES[split]:
            found = _find(path, stem)
            if found is None:
                raise FileNotFoundError(f"MNIST: expected {stem}[.gz] in {path}")
            files.append(found)
        images = read_idx(files[0], IDX_IMAGES_MAGIC)
        labels = read_idx(files[1], IDX_LABELS_MAGIC)
        self.split = split
        super().__init__(
            name="mnist",
            images=images[:, None, :, :],
            scale=255.0,
            labels=labels.astype(np.int64),
            num_classes=10,
            normalize=normalize,
            mean=MNIST_MEAN,
            std=MNIST_STD,
            image_size=image_size,
            class_names=[str(d) for d in range(10)],
        )
