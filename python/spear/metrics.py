"""Reconstruction quality metrics: compare recovered arrays with the true ones.

The functions only see arrays; they know nothing of how a reconstruction was made.
Reconstructions come back in an arbitrary order (and possibly with fewer rows than the
batch), so rows are first paired with the truth by :func:`match`.

Definitions used throughout:

* **recovered**: a truth row ``x`` is recovered when its matched reconstruction
  ``x_hat`` has relative L2 error ``||x_hat - x|| / ||x|| < RECOVERED_REL_ERR`` (1e-3).
  A truth row with no matched reconstruction is not recovered (relative error ``inf``).
* **PSNR** is ``10 log10(data_range^2 / MSE)`` dB, capped at ``PSNR_CAP_DB`` (200 dB):
  an exact reconstruction (MSE 0) reports the cap instead of ``inf`` so every value is
  finite JSON and batch means stay meaningful. 200 dB is far above what float32
  rounding of a genuine exact reconstruction produces, so the cap changes no
  comparison between methods.
* Per-input statistics of unmatched truth rows are ``nan`` (MSE, PSNR, SSIM, cosine);
  batch means (``psnr_mean``, ``ssim_mean``, ...) average the matched rows only, while
  ``recovered_fraction`` is over all truth rows.

LPIPS is not reported: it needs pretrained network weights (AlexNet/VGG) that cannot be
obtained offline here.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from skimage.metrics import structural_similarity

RECOVERED_REL_ERR = 1e-3
PSNR_CAP_DB = 200.0


def _rows(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 1:
        raise ValueError(f"{name} must have a leading row axis, got a scalar")
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:])))  # also for zero rows


def match(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """For each truth row, the index of its matched recon row, or -1 if none.

    Minimum-total-MSE one-to-one assignment (Hungarian algorithm) between the rows of
    ``recon`` (k_r, ...) and ``truth`` (k_t, ...); trailing axes are flattened. With
    fewer recon rows, ``k_t - k_r`` truth rows get -1. Non-finite recon rows are
    matched last.
    """
    r, t = _rows(recon, "recon"), _rows(truth, "truth")
    if r.shape[1] != t.shape[1]:
        raise ValueError(f"recon rows have {r.shape[1]} values, truth rows {t.shape[1]}")
    assignment = np.full(t.shape[0], -1, dtype=np.int64)
    if r.shape[0] == 0 or t.shape[0] == 0:
        return assignment
    with np.errstate(invalid="ignore", over="ignore"):
        cost = cdist(t, r, "sqeuclidean") / max(t.shape[1], 1)
    finite = np.isfinite(cost)
    # A large finite penalty keeps the solver feasible when a recon row holds nan/inf.
    worst = cost[finite].max() if finite.any() else 0.0
    cost[~finite] = 2.0 * worst + 1.0
    truth_idx, recon_idx = linear_sum_assignment(cost)
    assignment[truth_idx] = recon_idx
    return assignment


def _matched(recon: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Assignment, matched-row mask, and recon rows reordered like truth (nan if unmatched)."""
    assignment = match(recon, truth)
    ok = assignment >= 0
    aligned = np.full_like(truth, np.nan, dtype=np.float64)
    aligned[ok] = recon[assignment[ok]]
    return assignment, ok, aligned


def _rel_err(aligned: np.ndarray, truth: np.ndarray, ok: np.ndarray) -> np.ndarray:
    diff = np.linalg.norm((aligned - truth).reshape(len(truth), -1), axis=1)
    norm = np.linalg.norm(truth.reshape(len(truth), -1), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(norm > 0, diff / np.where(norm > 0, norm, 1.0), np.where(diff > 0, np.inf, 0.0))
    rel[~ok] = np.inf
    return np.where(np.isnan(rel), np.inf, rel)


def _mean(values: np.ndarray, ok: np.ndarray) -> float:
    return float(np.mean(values[ok])) if ok.any() else float("nan")


def _as_images(a: np.ndarray, shape: Sequence[int] | None, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if shape is not None:
        a = a.reshape((a.shape[0], *shape))
    if a.ndim == 3:  # (k, H, W): grayscale without a channel axis
        a = a[:, None]
    if a.ndim != 4:
        raise ValueError(f"{name} must be (k, C, H, W), (k, H, W), or flattened with shape=, got {a.shape}")
    return a


def _ssim(x_hat: np.ndarray, x: np.ndarray, data_range: float) -> float:
    """SSIM of two (C, H, W) images; window shrunk (odd, >= 3) to fit tiny images."""
    side = min(x.shape[1:])
    win = min(7, side if side % 2 else side - 1)
    if win < 3 or not np.isfinite(x_hat).all():
        return float("nan")
    if x.shape[0] == 1:
        return float(structural_similarity(x_hat[0], x[0], data_range=data_range, win_size=win))
    return float(structural_similarity(x_hat, x, data_range=data_range, win_size=win, channel_axis=0))


def image_metrics(
    recon_pixels: np.ndarray,
    truth_pixels: np.ndarray,
    *,
    data_range: float = 1.0,
    shape: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Match reconstructed images to the true ones and score each pair.

    Inputs are batches in pixel space, ``(k, C, H, W)`` or ``(k, H, W)``, or ``(k, n)``
    with ``shape=(C, H, W)``; ``recon_pixels`` may have fewer rows. Pixel values are
    not clipped. Returns per truth image (numpy arrays): ``mse``, ``psnr`` (dB, capped
    at ``PSNR_CAP_DB``), ``ssim``, ``rel_err``, ``recovered``, ``permutation`` (matched
    recon index or -1); per batch (floats): ``psnr_mean``, ``ssim_mean``,
    ``recovered_fraction``, and ``n_matched`` (int).
    """
    truth = _as_images(truth_pixels, shape, "truth_pixels")
    recon = _as_images(recon_pixels, shape, "recon_pixels")
    if recon.shape[1:] != truth.shape[1:]:
        raise ValueError(f"image shapes differ: recon {recon.shape[1:]}, truth {truth.shape[1:]}")
    assignment, ok, aligned = _matched(recon, truth)
    k = len(truth)
    mse = np.mean((aligned - truth).reshape(k, -1) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        psnr = np.minimum(10.0 * np.log10(data_range**2 / mse), PSNR_CAP_DB)
    ssim = np.array([_ssim(aligned[i], truth[i], data_range) if ok[i] else np.nan for i in range(k)])
    rel = _rel_err(aligned, truth, ok)
    recovered = rel < RECOVERED_REL_ERR
    return {
        "mse": mse,
        "psnr": psnr,
        "ssim": ssim,
        "rel_err": rel,
        "recovered": recovered,
        "permutation": assignment,
        "psnr_mean": _mean(psnr, ok),
        "ssim_mean": _mean(ssim, ok & np.isfinite(ssim)),
        "recovered_fraction": float(recovered.mean()) if k else float("nan"),
        "n_matched": int(ok.sum()),
    }


def feature_metrics(recon: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Match reconstructed feature vectors (e.g. a deeper layer's input) and score them.

    Returns per truth row: ``rel_err``, ``cosine`` (cosine similarity, nan if unmatched
    or a zero vector), ``recovered``, ``permutation``; per batch: ``rel_err_mean``,
    ``rel_err_max`` (over matched rows), ``cosine_mean``, ``recovered_fraction``, ``n_matched``.
    """
    t = _rows(truth, "truth")
    r = _rows(recon, "recon")
    assignment, ok, aligned = _matched(r, t)
    rel = _rel_err(aligned, t, ok)
    denom = np.linalg.norm(aligned, axis=1) * np.linalg.norm(t, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cosine = np.where(denom > 0, np.sum(aligned * t, axis=1) / denom, np.nan)
    recovered = rel < RECOVERED_REL_ERR
    return {
        "rel_err": rel,
        "cosine": cosine,
        "recovered": recovered,
        "permutation": assignment,
        "rel_err_mean": _mean(rel, ok),
        "rel_err_max": float(np.max(rel[ok])) if ok.any() else float("nan"),
        "cosine_mean": _mean(cosine, ok & np.isfinite(cosine)),
        "recovered_fraction": float(recovered.mean()) if len(t) else float("nan"),
        "n_matched": int(ok.sum()),
    }


def _is_continuous(column: np.ndarray) -> bool:
    return column.dtype.kind in "fiu"


def tabular_metrics(
    recon: dict[str, np.ndarray],
    truth: dict[str, np.ndarray],
    *,
    permutation: np.ndarray | None = None,
) -> dict[str, Any]:
    """Score decoded tabular rows column by column, in original units.

    Columns with a numeric dtype (float, int) are continuous and scored by mean absolute
    error; all others (strings, objects, bools) are categorical and scored by accuracy.
    Rows are assumed already matched: row i of every recon column belongs to truth row
    i. Otherwise pass ``permutation`` (as returned by :func:`match` on the *encoded*
    recon and truth arrays: per truth row the recon row or -1). Unmatched truth rows
    count as wrong categorical cells and are left out of the MAE.

    Returns ``columns`` (name -> {"kind", "accuracy" or "mae"}), ``discrete_accuracy``
    (fraction of correct categorical cells over all categorical columns, None if there
    are none), ``continuous_mae`` (name -> MAE), ``n_rows`` and ``n_matched``.
    """
    if set(recon) != set(truth):
        raise ValueError(f"column sets differ: recon-only {set(recon) - set(truth)}, truth-only {set(truth) - set(recon)}")
    truth_cols = {k: np.asarray(v) for k, v in truth.items()}
    lengths = {len(v) for v in truth_cols.values()}
    if len(lengths) > 1:
        raise ValueError(f"truth columns have different lengths {sorted(lengths)}")
    n_rows = lengths.pop() if lengths else 0
    if permutation is None:
        permutation = np.arange(n_rows)
    permutation = np.asarray(permutation, dtype=np.int64)
    if permutation.shape != (n_rows,):
        raise ValueError(f"permutation must have one entry per truth row ({n_rows}), got {permutation.shape}")
    ok = permutation >= 0

    columns: dict[str, dict[str, Any]] = {}
    continuous_mae: dict[str, float] = {}
    correct_cells = categorical_cells = 0
    for name, t in truth_cols.items():
        r = np.asarray(recon[name])
        if ok.any() and permutation[ok].max() >= len(r):
            raise ValueError(f"recon column {name!r} has {len(r)} rows, permutation needs more")
        r_aligned = r[permutation[ok]]
        if _is_continuous(t):
            err = np.abs(r_aligned.astype(np.float64) - t[ok].astype(np.float64))
            mae = float(err.mean()) if ok.any() else float("nan")
            columns[name] = {"kind": "continuous", "mae": mae}
            continuous_mae[name] = mae
        else:
            hits = int(np.sum(r_aligned.astype(object) == t[ok].astype(object)))
            columns[name] = {"kind": "categorical", "accuracy": hits / n_rows if n_rows else float("nan")}
            correct_cells += hits
            categorical_cells += n_rows
    return {
        "columns": columns,
        "discrete_accuracy": correct_cells / categorical_cells if categorical_cells else None,
        "continuous_mae": continuous_mae,
        "n_rows": int(n_rows),
        "n_matched": int(ok.sum()),
    }
