"""scikit-learn's embedded 8x8 digits: the default dataset that needs no files."""
from __future__ import annotations

import os

import numpy as np

from .images import ArrayImageDataset

__all__ = ["Digits"]


class Digits(ArrayImageDataset):
    """``sklearn.datasets.load_digits()``: 1,797 images, shape (1, 8, 8), 10 classes.

    Raw values 0..16 become pixels value / 16 in [0, 1] (exact in float32).  The
    normalisation mean/std are not published constants: they are the mean and the
    population std (ddof=0) of all pixels of all 1,797 images (about 0.305 / 0.376).
    ``root`` is ignored.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        *,
        normalize: bool = True,
        image_size: int | None = None,
    ) -> None:
        from sklearn.datasets import load_digits  # imported lazily: sklearn is slow to import

        bunch = load_digits()
        images = np.rint(bunch.images).astype(np.uint8)[:, None, :, :]
        pixels = images.astype(np.float64) / 16.0
        super().__init__(
            name="digits",
            images=images,
            scale=16.0,
            labels=bunch.target.astype(np.int64),
            num_classes=10,
            normalize=normalize,
            mean=(pixels.mean(),),
            std=(pixels.std(),),
            image_size=image_size,
            class_names=[str(d) for d in range(10)],
        )
