"""ImageNet sample: a flat folder of ``nXXXXXXXX_<name>.JPEG`` files."""
from __future__ import annotations

import os
import re

import numpy as np

from .base import as_root
from .images import IMAGENET_MEAN, IMAGENET_STD, ImageFileDataset

__all__ = ["ImageNetSample", "WNID_FILE_RE"]

# WordNet id prefix, then "_", then a free-form name; common image extensions.
WNID_FILE_RE = re.compile(r"^(n\d{8})_(.*)\.(jpe?g|png)$", re.IGNORECASE)


class ImageNetSample(ImageFileDataset):
    """Folder of ImageNet JPEGs labelled by their WordNet-id file-name prefix.

    Label = index of the wnid in the sorted list of wnids present (with all 1000
    ImageNet-1k classes present this is the standard class index).  Files that do not
    match ``nXXXXXXXX_<name>.<ext>`` are ignored.  Each image is RGB-converted, its
    shorter side resized (bilinear) to ``image_size`` (default 224), then centre-cropped
    to ``image_size x image_size``, only when requested through ``get``.
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        *,
        normalize: bool = True,
        image_size: int | None = None,
    ) -> None:
        path = as_root(root, "ImageNet")
        matches = []
        for fname in sorted(os.listdir(path)):
            m = WNID_FILE_RE.match(fname)
            if m and (path / fname).is_file():
                matches.append((fname, m.group(1), m.group(2)))
        if not matches:
            raise FileNotFoundError(f"ImageNet: expected files named nXXXXXXXX_<name>.JPEG in {path}")
        self.wnids = sorted({wnid for _, wnid, _ in matches})
        index = {w: i for i, w in enumerate(self.wnids)}
        # Class name: the file-name part after the wnid (first file of that class wins).
        names: dict[str, str] = {}
        for _, wnid, name in matches:
            names.setdefault(wnid, name)
        super().__init__(
            name="imagenet",
            paths=[path / fname for fname, _, _ in matches],
            labels=np.asarray([index[wnid] for _, wnid, _ in matches], np.int64),
            num_classes=len(self.wnids),
            image_size=224 if image_size is None else image_size,
            normalize=normalize,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            class_names=[names[w] for w in self.wnids],
        )
