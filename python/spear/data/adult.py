"""UCI ADULT (census income) from the original ``adult.data`` / ``adult.test`` files.

Encoding (one row of model input, columns in the original column order):

* continuous columns -> one float, standardised ``(v - mean) / std`` with the mean and
  population std (ddof=0) of the TRAIN file after dropping rows with missing values
  (raw values when ``normalize=False``);
* categorical columns -> a one-hot block over the categories seen in the train file,
  sorted alphabetically.

The label is ``income``: ``>50K`` -> 1, ``<=50K`` -> 0 (test file's trailing "." removed).
Rows containing a missing value ("?") are dropped in both files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .base import Dataset, as_root, require_file

__all__ = [
    "Adult",
    "AdultSchema",
    "CategoricalColumn",
    "ContinuousColumn",
    "ADULT_COLUMNS",
    "ADULT_CONTINUOUS",
    "read_adult_file",
]

# Column order from adult.names; "income" is the label, the rest are features.
ADULT_COLUMNS: tuple[str, ...] = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country",
)
ADULT_CONTINUOUS = frozenset(
    {"age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"}
)
_N_FIELDS = len(ADULT_COLUMNS) + 1


@dataclass(frozen=True)
class ContinuousColumn:
    """A continuous feature: its column ``index`` in the encoded row and train stats."""

    name: str
    index: int
    mean: float
    std: float


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical feature: the one-hot block ``slice`` and its sorted categories."""

    name: str
    slice: slice
    categories: tuple[str, ...]


@dataclass(frozen=True)
class AdultSchema:
    """Layout of an encoded ADULT row; ``standardized`` tells whether stats are applied."""

    continuous: tuple[ContinuousColumn, ...]
    categorical: tuple[CategoricalColumn, ...]
    n_features: int
    standardized: bool

    @property
    def columns(self) -> tuple[str, ...]:
        """Original feature column names, in encoding order."""
        return ADULT_COLUMNS

    def encode(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        """Encode original column values (one array per column) -> ``(k, n_features)`` float32."""
        k = len(columns[ADULT_COLUMNS[0]])
        x = np.zeros((k, self.n_features), np.float64)
        for col in self.continuous:
            v = np.asarray(columns[col.name], dtype=np.float64)
            x[:, col.index] = (v - col.mean) / col.std if self.standardized else v
        for col in self.categorical:
            lookup = {c: j for j, c in enumerate(col.categories)}
            values = [str(v) for v in columns[col.name]]
            unknown = sorted(set(values) - lookup.keys())
            if unknown:
                raise ValueError(f"ADULT: unknown {col.name} categories {unknown}")
            x[np.arange(k), col.slice.start + np.asarray([lookup[v] for v in values], int)] = 1.0
        return x.astype(np.float32)

    def decode(self, x: np.ndarray, *, round_continuous: bool = False) -> dict[str, np.ndarray]:
        """Map encoded rows ``(k, n_features)`` back to original column values.

        Continuous columns: float64, un-standardised and NOT rounded by default (so
        reconstruction error stays visible).  float32 inputs carry ~1e-7 relative error,
        i.e. up to ~0.05 on ``fnlwgt``; all ADULT continuous values are integers, so
        ``round_continuous=True`` recovers them exactly.  Categorical columns: the
        category at the argmax of the one-hot block (numpy str array).
        """
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != self.n_features:
            raise ValueError(f"ADULT: expected rows of {self.n_features} features, got {x.shape}")
        out: dict[str, np.ndarray] = {}
        for col in self.continuous:
            v = x[:, col.index].astype(np.float64)
            if self.standardized:
                v = v * col.std + col.mean
            out[col.name] = np.rint(v) if round_continuous else v
        for col in self.categorical:
            cats = np.asarray(col.categories)
            out[col.name] = cats[np.argmax(x[:, col.slice], axis=1)]
        return {name: out[name] for name in ADULT_COLUMNS}


def read_adult_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray, int]:
    """Parse an ADULT file; rows with a missing value ("?") are dropped.

    Returns ``(columns, labels, n_dropped)``: ``columns`` maps each feature name to a
    float64 array (continuous) or str array (categorical); ``labels`` is int64 (1 = >50K).
    Lines starting with "|" (the test file's "|1x3 Cross validator") and blank lines
    are skipped.
    """
    rows: list[list[str]] = []
    dropped = 0
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("|"):
                continue
            fields = [v.strip() for v in line.split(",")]
            if len(fields) != _N_FIELDS:
                raise ValueError(f"{path}:{lineno}: expected {_N_FIELDS} fields, got {len(fields)}")
            if "?" in fields:
                dropped += 1
                continue
            rows.append(fields)
    if not rows:
        raise ValueError(f"{path}: no complete rows")
    table = list(zip(*rows))
    columns: dict[str, np.ndarray] = {}
    for j, name in enumerate(ADULT_COLUMNS):
        if name in ADULT_CONTINUOUS:
            columns[name] = np.asarray(table[j], dtype=np.float64)
        else:
            columns[name] = np.asarray(table[j], dtype=str)
    income = [v.rstrip(".") for v in table[-1]]
    bad = set(income) - {">50K", "<=50K"}
    if bad:
        raise ValueError(f"{path}: unexpected income values {sorted(bad)}")
    labels = np.asarray([v == ">50K" for v in income], dtype=np.int64)
    return columns, labels, dropped


def _build_schema(train: Mapping[str, np.ndarray], standardized: bool) -> AdultSchema:
    continuous, categorical = [], []
    pos = 0
    for name in ADULT_COLUMNS:
        values = train[name]
        if name in ADULT_CONTINUOUS:
            continuous.append(ContinuousColumn(name, pos, float(values.mean()), float(values.std())))
            pos += 1
        else:
            cats = tuple(sorted(set(values.tolist())))
            categorical.append(CategoricalColumn(name, slice(pos, pos + len(cats)), cats))
            pos += len(cats)
    return AdultSchema(tuple(continuous), tuple(categorical), pos, standardized)


class Adult(Dataset):
    """UCI ADULT as a tabular dataset (see the module docstring for the encoding).

    ``split``: "test" (default, ``adult.test``, 15,060 complete rows) or "train"
    (``adult.data``, 30,162 complete rows).  The train file is always read because it
    defines the standardisation stats and the category lists.
    ``raw`` holds the split's original column values, ``schema`` the layout,
    ``decode``/``encode`` convert between the two.
    """

    def __init__(
        self,
        root: str | os.PathLike | None,
        *,
        normalize: bool = True,
        image_size: int | None = None,
        split: str = "test",
    ) -> None:
        if image_size is not None:
            raise ValueError("ADULT: image_size does not apply to a tabular dataset")
        if split not in ("test", "train"):
            raise ValueError(f"ADULT: split must be 'test' or 'train', got {split!r}")
        path: Path = as_root(root, "ADULT")
        train_cols, train_labels, _ = read_adult_file(require_file(path / "adult.data", "ADULT"))
        self.schema = _build_schema(train_cols, standardized=normalize)
        if split == "train":
            cols, labels = train_cols, train_labels
        else:
            cols, labels, _ = read_adult_file(require_file(path / "adult.test", "ADULT"))
        self.split = split
        self.raw = cols
        self.features = self.schema.encode(cols)
        super().__init__(
            name="adult",
            kind="tabular",
            sample_shape=(self.schema.n_features,),
            num_classes=2,
            labels=labels,
            normalized=normalize,
            class_names=["<=50K", ">50K"],
        )

    def _load(self, indices: np.ndarray) -> np.ndarray:
        return self.features[indices]

    def encode(self, columns: Mapping[str, Sequence]) -> np.ndarray:
        """See :meth:`AdultSchema.encode`."""
        return self.schema.encode(columns)

    def decode(self, x: np.ndarray, *, round_continuous: bool = False) -> dict[str, np.ndarray]:
        """See :meth:`AdultSchema.decode`."""
        return self.schema.decode(x, round_continuous=round_continuous)
