"""The HTML report and grid titles of ``spear attack`` / ``spear demo`` (a simulated client)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from . import findings, report
from .fl import linear_layers


def what_was_attacked(exp) -> str:
    """One line: model, width, depth, layer (with its shape), protocol, dataset."""
    c = exp.config
    layer = linear_layers(exp.model)[c.layer]
    model = (f"{c.model} (width {c.width}, depth {c.depth}"
             + (f", conv channels {','.join(map(str, c.channels))}" if c.model == "vgg" else "") + ")")
    protocol = c.protocol if c.protocol == "fedsgd" else (
        f"fedavg (epochs {c.epochs}, mini-batch {c.mini_batch or c.batch_size}, lr {c.lr:g})")
    if c.dp_clip is not None:
        protocol += f" + DP-SGD (clip {c.dp_clip:g}, sigma {c.dp_sigma:g})"
    return (f"{model} on {c.dataset}, linear layer {c.layer} ({layer.out_features} x {layer.in_features}), "
            f"protocol {protocol}")


def _verdict(exp, r, row) -> tuple[str, str]:
    c, rec = exp.config, r.reconstruction
    psnr = row.get("psnr_mean")
    if rec is None:
        return f"optimization result, no certificate (PSNR {psnr:.1f} dB)" if psnr else "optimization result", "warn"
    f = findings.facts(rec)
    cnn = c.model == "vgg" and c.layer == 0
    text, level = findings.verdict_of(f, what="features" if cnn else "batch")
    if cnn and psnr is not None:
        text += f"; images by feature inversion, PSNR {psnr:.1f} dB (not exact)"
    elif r.inversion is not None and psnr is not None:
        text += f"; gradient matching from the partial result, PSNR {psnr:.1f} dB"
    return text, level


def grid_title(exp, r, row) -> str:
    c = exp.config
    return (f"{c.dataset} | {c.model} layer {c.layer} | b={c.batch_size} | batch {r.index} | "
            f"{_verdict(exp, r, row)[0]}")


def _per_input(r) -> tuple[list[str], list[list[Any]]] | None:
    s = r.scores
    rel = s.get("rel_err")
    if rel is None:
        return None
    perm = s.get("permutation")
    psnr = s.get("psnr")
    header = ["input", "matched reconstruction", "relative error", "recovered"]
    if psnr is not None:
        header.append("PSNR dB")
    rows = []
    for i, e in enumerate(np.asarray(rel, dtype=float)):
        row = [i, None if perm is None or perm[i] < 0 else int(perm[i]),
               None if not np.isfinite(e) else float(e), bool(np.isfinite(e) and e < 1e-3)]
        if psnr is not None:
            row.append(None if not np.isfinite(psnr[i]) else float(psnr[i]))
        rows.append(row)
    return header, rows


def attack_html(exp, summary: dict[str, Any], results, path: Path) -> Path:
    """report.html: what was attacked, then one section per batch (picture, verdict,
    per-input errors, certificate with its meaning, diagnosis)."""
    c = exp.config
    certified = sum(bool(row["certified"]) for _, row, _ in results)
    cnn = c.model == "vgg" and c.layer == 0
    title = (f"spear {c.method}: {c.dataset}, {c.model} layer {c.layer}, b = {c.batch_size}: "
             f"{certified}/{len(results)} batches certified" + (" (features)" if cnn else ""))
    facts = [("attacked", summary["attacked"]), ("method", c.method), ("direction source", c.search),
             ("batches", len(results)), ("time limit per batch", c.time_limit),
             ("recovered (median fraction of inputs)", summary["recovered_fraction"]),
             ("mean PSNR (median over batches)", summary["psnr_mean"]),
             ("device", summary["device"]), ("spear", summary["version"])]
    notes = [f"'Recovered' means a relative L2 error below 1e-3 against the client's true input "
             f"(known here because the client is simulated)."]
    if cnn:
        notes.append("CNN path: SPEAR recovers and certifies the convolutional features (the input of "
                     "the head's first linear layer); the images are then found by feature inversion, "
                     "an optimization, and are not certified.")
    sections = []
    for r, row, picture in results:
        text, level = _verdict(exp, r, row)
        sec: dict[str, Any] = {"heading": f"Batch {r.index}", "verdict": text, "level": level,
                               "image": picture, "inputs": _per_input(r)}
        if r.reconstruction is not None:
            f = findings.facts(r.reconstruction, seconds=r.seconds, time_limit=c.time_limit)
            sec["certificate"] = findings.certificate_rows(f)
            sec["diagnosis"] = f["diagnosis"]
        sections.append(sec)
    return report.write_html(path, title, facts, sections, notes=notes)
