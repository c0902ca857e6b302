"""Reports an auditor reads or diffs: PNG grids, summary.json, batches.csv, ADULT tables,
and one self-contained HTML page per run (:func:`write_html`)."""
from __future__ import annotations

import base64
import csv
import html
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

#: Height of the title band drawn above a grid when it has a title.
TITLE_HEIGHT = 16
#: Significant digits of the floats written into JSON (rounding noise is not evidence).
JSON_DIGITS = 6


def verdict(complete: bool, certified: bool | None, violation_rate: float | None = None, *,
            what: str = "batch") -> tuple[str, str]:
    """(text, level) of a result: level is "ok" (proven), "warn" (evidence) or "fail".

    ``what`` names what the certificate is about ("batch", or "features" on a CNN).
    """
    if certified:
        return f"{what} recovered exactly and certified", "ok"
    if complete:
        rate = "" if violation_rate is None else f", violation rate {violation_rate:.3f}"
        return f"{what} recovered, consistent with the layer but not proven{rate}", "warn"
    return f"{what} not recovered", "fail"


def _titled(img: Image.Image, title: str | None) -> Image.Image:
    if not title:
        return img
    # Widen narrow grids (small batches) so the title is never cut off.
    width = max(img.width, int(ImageDraw.Draw(img).textlength(title)) + 8)
    out = Image.new("RGB", (width, img.height + TITLE_HEIGHT), "white")
    ImageDraw.Draw(out).text((4, 2), title, fill="black")
    out.paste(img, (0, TITLE_HEIGHT))
    return out


def _layout(truth: np.ndarray, cell: int, max_columns: int):
    """Tile geometry shared by the grids: small images are upscaled to about ``cell``
    pixels; wide batches wrap into blocks of ``max_columns``."""
    k, C, H, W = truth.shape
    scale = max(1, cell // max(H, W)) if max(H, W) < cell else 1
    cols = min(k, max_columns)
    return k, C, H, W, scale, H * scale, W * scale, cols, math.ceil(k / cols)


def image_grid(recon: np.ndarray | None, truth: np.ndarray, path: str | Path, *,
               order: np.ndarray | None = None, max_columns: int = 16, cell: int = 64,
               gap: int = 2, labels: tuple[str, str] = ("reconstructed", "original"),
               title: str | None = None) -> Path:
    """PNG with reconstructed inputs above their originals, pair by pair.

    recon, truth: (k, C, H, W) in [0, 1] pixel space; ``order[i]`` is the reconstruction
    matched to truth i (-1 for none). Missing reconstructions are drawn as grey cells.
    ``title`` is drawn in a band of :data:`TITLE_HEIGHT` pixels above the grid.
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
    _titled(img, title).save(path)
    return path


def input_grid(images: np.ndarray, path: str | Path, *, title: str | None = None, max_columns: int = 16,
               cell: int = 64, gap: int = 2, label: str = "recovered") -> Path:
    """PNG of one row of images (k, C, H, W) in [0, 1] (no ground truth: an audit)."""
    k, C, H, W, scale, h, w, cols, blocks = _layout(images, cell, max_columns)
    label_w = 100
    img = Image.new("RGB", (label_w + cols * (w + gap) + gap, blocks * (h + gap) + gap), "white")
    draw = ImageDraw.Draw(img)
    for i in range(k):
        bx, by = i % cols, i // cols
        x0, y0 = label_w + gap + bx * (w + gap), gap + by * (h + gap)
        img.paste(_tile(images[i], (C, H, W), scale), (x0, y0))
        if bx == 0:
            draw.text((4, y0 + h // 2 - 5), label, fill="black")
    path = Path(path)
    _titled(img, title).save(path)
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
        return float(f"{float(x):.{JSON_DIGITS}g}") if math.isfinite(float(x)) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# --- HTML -------------------------------------------------------------------------------

_CSS = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}
.verdict{font-weight:bold;padding:4px 8px;display:inline-block;border-radius:4px}
.ok{background:#d4f4d4}.warn{background:#fff0c0}.fail{background:#f8d0d0}
img{max-width:100%;image-rendering:pixelated}section{border-top:1px solid #888;margin-top:1.5em}
.diagnosis{background:#f4f4f4;padding:6px;white-space:pre-wrap}"""


def png_data_uri(path: str | Path) -> str:
    """A PNG file as a data: URI, so the HTML page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in r) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def write_html(path: str | Path, title: str, facts: Sequence[tuple[str, Any]],
               sections: Sequence[dict[str, Any]], *, notes: Sequence[str] = ()) -> Path:
    """One self-contained HTML page: what was attacked, then one section per result.

    A section is a dict with ``heading``, ``verdict`` and ``level`` (see :func:`verdict`),
    and optionally ``image`` (a PNG path, embedded as base64), ``inputs`` (header, rows:
    a per-input table), ``certificate`` (rows of (quantity, value, what it means)),
    ``diagnosis`` (why a result is incomplete), ``notes`` (paragraphs) and ``link`` (a
    relative path to another report).
    """
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>",
             "<h2>What was attacked</h2>", _table(facts)]
    parts += [f"<p>{e(n)}</p>" for n in notes]
    for sec in sections:
        parts.append(f"<section><h2>{e(sec['heading'])}</h2>"
                     f"<p class='verdict {e(sec['level'])}'>{e(sec['verdict'])}</p>")
        if sec.get("image"):
            parts.append(f"<p><img alt='{e(sec['heading'])}' src='{png_data_uri(sec['image'])}'></p>")
        if sec.get("diagnosis"):
            parts.append(f"<h3>Diagnosis</h3><p class='diagnosis'>{e(sec['diagnosis'])}</p>")
        if sec.get("certificate"):
            parts.append("<h3>Certificate</h3>" + _table(sec["certificate"], ("quantity", "value", "what it means")))
        if sec.get("inputs"):
            header, rows = sec["inputs"]
            parts.append("<h3>Per input</h3>" + _table(rows, header))
        parts += [f"<p>{e(n)}</p>" for n in sec.get("notes", ())]
        if sec.get("link"):
            parts.append(f"<p><a href='{e(sec['link'])}'>{e(sec['link'])}</a></p>")
        parts.append("</section>")
    parts.append("</body></html>\n")
    path = Path(path)
    path.write_text("".join(parts), encoding="utf-8")
    return path
