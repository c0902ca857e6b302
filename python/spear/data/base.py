"""Common dataset interface shared by every loader in :mod:`spear.data`.

A :class:`Dataset` hands out *flattened float32 model inputs* (what the attacked
linear layer sees) together with int64 labels.  Labels are always held in memory so
batches can be drawn (e.g. label-homogeneous ones) without decoding a single image.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["Dataset", "ImageDataset", "as_root", "require_file"]


def as_root(root: str | os.PathLike | None, dataset: str) -> Path:
    """Validate a user-given dataset folder and return it as a :class:`Path`."""
    if root is None:
        raise ValueError(f"{dataset}: a dataset folder (root) is required")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{dataset}: dataset folder {path} does not exist")
    return path


def require_file(path: Path, dataset: str) -> Path:
    """Return ``path`` if it is a file, else raise a one-sentence FileNotFoundError."""
    if not path.is_file():
        raise FileNotFoundError(f"{dataset}: expected {path.name} in {path.parent}")
    return path


class Dataset:
    """Base class: labels in memory, inputs produced on demand by :meth:`_load`.

    Subclasses implement :meth:`_load` (indices -> ``(k, *sample_shape)`` arrays) and
    may override :meth:`_transform` (e.g. normalisation) and :meth:`to_pixels`.
    """

    name: str
    kind: str
    sample_shape: tuple[int, ...]
    num_classes: int
    normalized: bool
    mean: np.ndarray | None
    std: np.ndarray | None
    labels: np.ndarray
    class_names: list[str] | None

    def __init__(
        self,
        *,
        name: str,
        kind: str,
        sample_shape: Sequence[int],
        num_classes: int,
        labels: np.ndarray,
        normalized: bool = False,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        if kind not in ("image", "tabular"):
            raise ValueError(f"kind must be 'image' or 'tabular', got {kind!r}")
        self.name = name
        self.kind = kind
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.num_classes = int(num_classes)
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.normalized = bool(normalized)
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self.std = None if std is None else np.asarray(std, dtype=np.float64)
        self.class_names = None if class_names is None else list(class_names)
        if self.labels.ndim != 1:
            raise ValueError(f"{name}: labels must be 1-D, got shape {self.labels.shape}")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise ValueError(f"{name}: labels must lie in [0, {self.num_classes})")

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, n={len(self)}, "
            f"sample_shape={self.sample_shape}, num_classes={self.num_classes}, "
            f"normalized={self.normalized})"
        )

    @property
    def input_dim(self) -> int:
        """Length of one flattened model input, ``prod(sample_shape)``."""
        return int(np.prod(self.sample_shape))

    # --------------------------------------------------------------- hooks
    def _load(self, indices: np.ndarray) -> np.ndarray:
        """Return raw samples ``(k, *sample_shape)`` (pixels in [0, 1] for images)."""
        raise NotImplementedError

    def _transform(self, x: np.ndarray) -> np.ndarray:
        """Map raw samples to model inputs (identity unless overridden)."""
        return x

    # ------------------------------------------------------------- public API
    def _check_indices(self, indices: int | Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.atleast_1d(np.asarray(indices))
        if idx.ndim != 1:
            raise ValueError(f"{self.name}: indices must be a scalar or 1-D, got shape {idx.shape}")
        if idx.size == 0:
            return idx.astype(np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"{self.name}: indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64)
        n = len(self)
        if idx.min() < -n or idx.max() >= n:
            raise IndexError(f"{self.name}: index out of range for a dataset of {n} samples")
        return np.where(idx < 0, idx + n, idx)

    def get(self, indices: int | Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(inputs, labels)``: ``(k, prod(sample_shape))`` float32 and ``(k,)`` int64.

        A scalar index yields ``k == 1``.
        """
        idx = self._check_indices(indices)
        if idx.size == 0:
            return np.zeros((0, self.input_dim), np.float32), np.zeros(0, np.int64)
        x = self._transform(self._load(idx))
        x = np.ascontiguousarray(x, dtype=np.float32).reshape(len(idx), self.input_dim)
        return x, self.labels[idx].copy()

    def sample_batch(
        self,
        batch_size: int,
        *,
        seed: int = 0,
        label_homogeneous: bool = False,
        label: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw ``batch_size`` distinct samples with ``numpy.random.default_rng(seed)``.

        Returns ``(inputs, labels, indices)``.  With ``label_homogeneous=True`` (implied
        when ``label`` is given) all samples share one class: ``label`` if given, else a
        class drawn by the seed among classes holding at least ``batch_size`` samples.
        Raises ValueError when the request cannot be met.
        """
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        rng = np.random.default_rng(seed)
        if label is not None or label_homogeneous:
            counts = np.bincount(self.labels, minlength=self.num_classes)
            if label is not None:
                label = int(label)
                if not 0 <= label < self.num_classes:
                    raise ValueError(f"{self.name}: label {label} not in [0, {self.num_classes})")
                if counts[label] < batch_size:
                    raise ValueError(
                        f"{self.name}: class {label} has {counts[label]} samples, "
                        f"fewer than batch_size={batch_size}"
                    )
                cls = label
            else:
                eligible = np.flatnonzero(counts >= batch_size)
                if eligible.size == 0:
                    raise ValueError(
                        f"{self.name}: no class has at least batch_size={batch_size} samples "
                        f"(largest class: {counts.max()})"
                    )
                cls = int(rng.choice(eligible))
            pool = np.flatnonzero(self.labels == cls)
            indices = rng.choice(pool, size=batch_size, replace=False)
        else:
            if batch_size > len(self):
                raise ValueError(
                    f"{self.name}: batch_size={batch_size} exceeds the dataset size {len(self)}"
                )
            indices = rng.choice(len(self), size=batch_size, replace=False)
        indices = indices.astype(np.int64)
        x, y = self.get(indices)
        return x, y, indices

    def to_pixels(self, x: np.ndarray) -> np.ndarray:
        """Map flattened model inputs back to ``(k, C, H, W)`` pixels (images only)."""
        raise TypeError(f"{self.name}: to_pixels is only defined for image datasets")


class ImageDataset(Dataset):
    """Image dataset: raw samples are ``(C, H, W)`` pixels in [0, 1].

    When ``normalized`` the model input is ``(pixel - mean[c]) / std[c]``, computed in
    float64 and stored as float32.
    """

    def __init__(
        self,
        *,
        name: str,
        sample_shape: Sequence[int],
        num_classes: int,
        labels: np.ndarray,
        normalize: bool,
        mean: Sequence[float],
        std: Sequence[float],
        class_names: Sequence[str] | None = None,
    ) -> None:
        mean_arr = np.asarray(mean, dtype=np.float64).reshape(-1)
        std_arr = np.asarray(std, dtype=np.float64).reshape(-1)
        channels = int(sample_shape[0])
        if mean_arr.shape != (channels,) or std_arr.shape != (channels,):
            raise ValueError(f"{name}: mean/std must have shape ({channels},)")
        super().__init__(
            name=name,
            kind="image",
            sample_shape=sample_shape,
            num_classes=num_classes,
            labels=labels,
            normalized=normalize,
            mean=mean_arr if normalize else None,
            std=std_arr if normalize else None,
            class_names=class_names,
        )

    def _transform(self, x: np.ndarray) -> np.ndarray:
        if not self.normalized:
            return x
        m = self.mean[:, None, None]
        s = self.std[:, None, None]
        return ((x.astype(np.float64) - m) / s).astype(np.float32)

    def to_pixels(self, x: np.ndarray) -> np.ndarray:
        """Undo normalisation: ``(k, n)`` (or ``(n,)``) inputs -> ``(k, C, H, W)`` pixels.

        No clipping is applied, so reconstruction errors stay visible; float64 input
        stays float64, anything else becomes float32.
        """
        arr = np.asarray(x)
        if arr.shape[-1] != self.input_dim or arr.ndim not in (1, 2):
            raise ValueError(
                f"{self.name}: expected inputs of shape (k, {self.input_dim}), got {arr.shape}"
            )
        out_dtype = np.float64 if arr.dtype == np.float64 else np.float32
        pix = arr.reshape(-1, *self.sample_shape)
        if self.normalized:
            pix = pix.astype(np.float64) * self.std[:, None, None] + self.mean[:, None, None]
        return pix.astype(out_dtype)
