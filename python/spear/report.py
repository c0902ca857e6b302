"""Reports an auditor reads or diffs: PNG grids, summary.json, batches.csv, ADULT tables."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw


def _layout(truth: np.ndarray, cell: int, max_columns: int):
    """Tile geometry shared by the grids: small images are upscaled to about ``cell``
    pixels; wide batches wrap into blocks of ``max_columns``."""
    k, C, H, W = truth.shape
    scale = max(1, cell // max(H, W)) if max(H, W) < cell else 1
    cols = min(k, max_columns)
    return k, C, H, W, scale, H * scale, W * scale, cols, math.ceil(k / cols)


def image_grid(recon: np.ndarray | None, truth: np.ndarray, path: str | Path, *,
               order: np.ndarray | None = None, max_columns: int = 16, cell: int = 64,
               gap: int = 2, labels: tuple[str, str] = ("reconstructed", "original")) -> Path:
    """PNG with reconstructed inputs above their originals, pair by pair.

    recon, truth: (k, C, H, W) in [0, 1] pixel space; ``order[i]`` is the reconstruction
    matched to truth i (-1 for none). Missing reconstructions are drawn as grey cells.
    """
    k, C, H, W, scale, h, w, cols, blocks = _layout(truth, cell, max_columns)
    label_w = 100
    img = Image.new("RGB", (label_w + cols * (w + gap) + gap, blocks * (2 * (h + gap) + gap) + gap),
                    "white")
    draw = ImageDraw.Draw(img)
    for i in range(k):
        bx, by = i % cols, i // cols
        x0 = label_w + gap + bx * (w + gap)
        y0 = gap + by * (2 * (h + gap) + gap)
        j = i if order is None else int(order[i])
        top = None if recon is None or j < 0 else recon[j]
        img.paste(_tile(top, (C, H, W), scale), (x0, y0))
        img.paste(_tile(truth[i], (C, H, W), scale), (x0, y0 + h + gap))
        if bx == 0:
            draw.text((4, y0 + h // 2 - 5), labels[0], fill="black")
            draw.text((4, y0 + h + gap + h // 2 - 5), labels[1], fill="black")
    path = Path(path)
    img.save(path)
    return path


def comparison_grid(truth: np.ndarray, rows: Sequence[tuple[str, np.ndarray | None, np.ndarray | None]],
                    path: str | Path, *, max_columns: int = 20, cell: int = 64, gap: int = 2) -> Path:
    """PNG with the originals on top and one row per method below, column by column.

    truth: (k, C, H, W) pixels in [0, 1]; rows: (label, recon (k', C, H, W) or None,
    order) where ``order[i]`` is the recon matched to truth i (-1 or None recon: grey).
    Blocks of ``max_columns`` inputs are stacked when the batch is wider.
    """
    k, C, H, W, scale, h, w, cols, blocks = _layout(truth, cell, max_columns)
    label_w = 130
    per_block = (1 + len(rows)) * (h + gap) + 2 * gap
    img = Image.new("RGB", (label_w + cols * (w + gap) + gap, blocks * per_block + gap), "white")
    draw = ImageDraw.Draw(img)
    all_rows = [("original", truth, None), *rows]
    for i in range(k):
        bx, by = i % cols, i // cols
        x0 = label_w + gap + bx * (w + gap)
        for r, (label, recon, order) in enumerate(all_rows):
            y0 = gap + by * per_block + r * (h + gap)
            j = i if order is None else int(order[i])
            tile = None if recon is None or j < 0 or j >= len(recon) else recon[j]
            img.paste(_tile(tile, (C, H, W), scale), (x0, y0))
            if bx == 0:
                draw.text((4, y0 + h // 2 - 5), label, fill="black")
    path = Path(path)
    img.save(path)
    return path


def _tile(x: np.ndarray | None, shape: Sequence[int], scale: int) -> Image.Image:
    C, H, W = shape
    if x is None:
        arr = np.full((H, W, 3), 128, np.uint8)
    else:
        arr = (np.clip(np.asarray(x, np.float64), 0, 1) * 255 + 0.5).astype(np.uint8)
        arr = np.repeat(arr, 3, axis=0) if C == 1 else arr
        arr = arr.transpose(1, 2, 0)
    tile = Image.fromarray(arr, "RGB")
    return tile.resize((W * scale, H * scale), Image.NEAREST) if scale > 1 else tile


def write_json(data: Any, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(_plain(data), indent=2, sort_keys=False, allow_nan=False) + "\n")
    return path


def write_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            for r in rows:
                w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return path


def write_table(recon: dict[str, np.ndarray] | None, truth: dict[str, np.ndarray],
                path: str | Path) -> Path:
    """CSV of original rows, each followed by its reconstruction (ADULT)."""
    cols = list(truth)
    n = len(truth[cols[0]])
    rows = []
    for i in range(n):
        rows.append({"row": i, "which": "original", **{c: _cell(truth[c][i]) for c in cols}})
        rows.append({"row": i, "which": "recovered",
                     **{c: (_cell(recon[c][i]) if recon is not None else "") for c in cols}})
    return write_csv(rows, path)


def _cell(v):
    return v.item() if hasattr(v, "item") else v


def _plain(x):
    """JSON-safe: numpy to Python, non-finite floats to None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.ndarray):
        return _plain(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x
