"""Tiny ImageNet in its official folder layout (val split by default)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import as_root, require_file
from .images import IMAGENET_MEAN, IMAGENET_STD, ImageFileDataset

__all__ = ["TinyImageNet", "read_wnids"]

_IMAGE_EXTS = (".jpeg", ".jpg", ".png")


def read_wnids(path: Path) -> list[str]:
    """Read ``wnids.txt``: one WordNet id per line (blank lines / CRLF tolerated)."""
    wnids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(set(wnids)) != len(wnids):
        raise ValueError(f"{path}: duplicate WordNet ids")
    return wnids


def _read_words(path: Path, wnids: list[str]) -> list[str] | None:
    # words.txt (optional) maps every WordNet id to "name, synonym, ..."; keep the first.
    if not path.is_file():
        return None
    wanted = set(wnids)
    names: dict[str, str] = {}
    for line in path.read_text().splitlines():
        wnid, _, words = line.partition("\t")
        if wnid in wanted:
            names[wnid] = words.split(",")[0].strip()
    return [names.get(w, w) for w in wnids]


class TinyImageNet(ImageFileDataset):
    """Tiny ImageNet, shape (3, 64, 64) (or ``image_size``), ImageNet mean/std.

    Layout: ``root/wnids.txt``; val split from ``root/val/val_annotations.txt`` (tab
    separated: file, wnid, 4 box ints) and ``root/val/images/``; train split from
    ``root/train/<wnid>/images/*.JPEG``.  Label = line index of the wnid in wnids.txt.
    Images are decoded lazily; ``image_size`` resizes (shorter side + centre crop,
    i.e. a plain resize for the square originals).
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        *,
        normalize: bool = True,
        image_size: int | None = None,
        split: str = "val",
    ) -> None:
        path = as_root(root, "TinyImageNet")
        wnids = read_wnids(require_file(path / "wnids.txt", "TinyImageNet"))
        index = {w: i for i, w in enumerate(wnids)}
        if split == "val":
            paths, labels, boxes = self._read_val(path, index)
        elif split == "train":
            paths, boxes = self._read_train(path, wnids), None
            labels = np.asarray([index[p.parent.parent.name] for p in paths], np.int64)
        else:
            raise ValueError(f"TinyImageNet: split must be 'val' or 'train', got {split!r}")
        self.split = split
        self.wnids = wnids
        # Bounding boxes (x0, y0, x1, y1) from the annotations; None for the train split.
        self.boxes = boxes
        super().__init__(
            name="tiny-imagenet",
            paths=paths,
            labels=labels,
            num_classes=len(wnids),
            image_size=64 if image_size is None else image_size,
            normalize=normalize,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            class_names=_read_words(path / "words.txt", wnids),
        )

    @staticmethod
    def _read_val(path: Path, index: dict[str, int]) -> tuple[list[Path], np.ndarray, np.ndarray]:
        ann = require_file(path / "val" / "val_annotations.txt", "TinyImageNet")
        img_dir = path / "val" / "images"
        if not img_dir.is_dir():
            raise FileNotFoundError(f"TinyImageNet: expected folder images in {img_dir.parent}")
        present = set(os.listdir(img_dir))  # one listdir instead of 10,000 stat calls
        paths, labels, boxes = [], [], []
        for lineno, line in enumerate(ann.read_text().splitlines(), 1):
            fields = line.strip().split("\t")
            if fields == [""]:
                continue
            if len(fields) < 2:
                raise ValueError(f"{ann}:{lineno}: expected tab-separated file and wnid")
            fname, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in index:
                raise ValueError(f"{ann}:{lineno}: wnid {wnid} is not listed in wnids.txt")
            if fname not in present:
                raise FileNotFoundError(f"TinyImageNet: expected {fname} in {img_dir}")
            paths.append(img_dir / fname)
            labels.append(index[wnid])
            box = [int(v) for v in fields[2:6]] if len(fields) >= 6 else [-1] * 4
            boxes.append(box)
        if not paths:
            raise ValueError(f"{ann}: no annotations found")
        return paths, np.asarray(labels, np.int64), np.asarray(boxes, np.int64).reshape(-1, 4)

    @staticmethod
    def _read_train(path: Path, wnids: list[str]) -> list[Path]:
        paths: list[Path] = []
        for wnid in wnids:
            img_dir = path / "train" / wnid / "images"
            if not img_dir.is_dir():
                raise FileNotFoundError(f"TinyImageNet: expected folder images in {img_dir.parent}")
            paths.extend(
                sorted(p for p in img_dir.iterdir() if p.suffix.lower() in _IMAGE_EXTS)
            )
        return paths
