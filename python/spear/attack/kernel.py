"""``sample_directions``: the public entry to the compiled sampler (CPU or CUDA kernel).

One sample draws b-1 distinct rows of L with a Philox counter-based generator (so a seed
draws the same submatrices on every backend), takes the unit null vector of that
(b-1) x b submatrix, and keeps it when L q has enough near-zero rows. See
``csrc/include/spear/sampler.h`` for the exact rule and ``reference.py`` for the oracle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import backend as _backend
from .tolerance import DEFAULT_TOL, default_min_zeros, min_zeros_for, row_thresholds  # noqa: F401 (re-exported)
from .validate import check_float_dtype

#: Rows of the early test (used from this batch size on; small batches need no speed-up).
PROBE_ROWS = 64
PROBE_FROM_B = 8


@dataclass
class Directions:
    """Accepted candidates of one sampling run, sorted by sample index."""

    q: Any                # (k, b) unit null vectors (numpy, or CuPy for CuPy input)
    zeros: Any            # (k,) zero count of L q for each
    index: Any            # (k,) sample index that produced each
    evaluated: int        # samples evaluated
    accepted_total: int   # accepted (may exceed k when max_candidates truncated the output)
    backend: str          # "cpu" or "cuda"
    min_zeros: int
    tol: float


def default_probe(b: int) -> int:
    return PROBE_ROWS if b >= PROBE_FROM_B else 0


def sampler_device(backend: str, b: int) -> str:
    """The kernel a search on ``backend`` ("cpu" or "cuda") uses at batch size b: the CUDA
    kernel is compiled for b <= ``_core.cuda_max_b``; above that the CPU kernel runs."""
    from spear import _core

    return "cuda" if backend == "cuda" and b <= int(_core.cuda_max_b) else "cpu"


def sample_directions(L, num_samples: int, *, seed: int = 0, tol: float | None = None,
                      floor: float = 0.0, min_zeros: int | None = None, device: str = "auto", offset: int = 0,
                      probe: int | None = None, probe_min: int = 1,
                      max_candidates: int = 100_000, num_threads: int | None = None) -> Directions:
    """Evaluate samples ``offset .. offset + num_samples - 1`` of the SPEAR sampler on L.

    Parameters
    ----------
    L : (m, b) float32 or float64 array, numpy (CPU) or CuPy (GPU); no all-zero rows.
    num_samples : how many random (b-1) x b submatrices to evaluate.
    seed : generator seed; the same (seed, sample index) draws the same rows everywhere.
    tol : relative zero tolerance, a row r counts as zero when |L_r q| <= tol * ||L_r||.
        Default 1e-9 for float64, 1e-4 for float32.
    floor : absolute zero tolerance added under noise: |L_r q| <= max(tol ||L_r||, floor).
    min_zeros : accept only candidates with at least this many zero rows (sampled rows
        included). Default :func:`default_min_zeros`.
    device : "auto" (the array's device), "cpu" or "cuda".
    offset : index of the first sample (continue a stream in chunks).
    probe, probe_min : early test, reject unless ``probe_min`` of the first ``probe`` rows
        are zero beyond the sampled ones. Default probe: 64 rows for b >= 8, else off.
    max_candidates : keep at most this many candidates (the lowest sample indices on the CPU).
    num_threads : CPU threads (default: all cores).
    """
    from spear import _core

    is_cupy = hasattr(L, "__cuda_array_interface__") and not type(L).__module__.startswith("torch")
    dtype = check_float_dtype(L, "L")
    if len(L.shape) != 2:
        raise ValueError(f"L must be 2-D (m x b), got shape {tuple(L.shape)}")
    m, b = (int(s) for s in L.shape)
    if b < 1 or m < b - 1:
        raise ValueError(f"L must have b >= 1 columns and at least b-1 rows, got shape {(m, b)}")
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
    if offset < 0 or seed < 0 or seed >= 2**64:
        raise ValueError("offset and seed must be non-negative (seed < 2**64)")
    L_host = L.get() if is_cupy else np.asarray(L)
    if not np.isfinite(L_host).all():
        raise ValueError("L contains NaN or Inf")
    if (~L_host.any(axis=1)).any():
        raise ValueError("L has all-zero rows; drop them first (L[L.any(axis=1)]): "
                         "they carry no information and would count as zeros of every proposal")
    tol = DEFAULT_TOL[dtype] if tol is None else float(tol)
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if not floor >= 0 or not math.isfinite(floor):
        raise ValueError(f"floor must be a finite non-negative number, got {floor!r}")
    thresh = row_thresholds(L_host, tol, floor)
    if min_zeros is None:
        min_zeros = default_min_zeros(m, b, tol) if floor == 0 else min_zeros_for(L_host, thresh)
    min_zeros = int(min_zeros)
    probe = default_probe(b) if probe is None else int(probe)

    if device == "auto":
        device = "cuda" if is_cupy else "cpu"
    if device == "cpu":
        q, zeros, index, evaluated, total = _core.sample_cpu(
            np.ascontiguousarray(L_host), thresh, int(seed), int(offset), int(num_samples),
            min_zeros, probe, int(probe_min), int(max_candidates), int(num_threads or 0))
        return Directions(q, zeros, index, int(evaluated), int(total), "cpu", min_zeros, tol)
    if device != "cuda":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if not _backend.cuda_available():
        raise ValueError("device='cuda' but the CUDA path cannot run: "
                         + _backend._cuda_unavailable_reason())
    if b > _core.cuda_max_b:
        raise ValueError(f"the CUDA kernel handles b <= {_core.cuda_max_b}, got b = {b}")
    return _sample_cuda(L, thresh, dtype, m, b, seed, offset, num_samples, min_zeros, probe,
                        probe_min, max_candidates, tol, return_cupy=is_cupy)


def _sample_cuda(L, thresh, dtype, m, b, seed, offset, num_samples, min_zeros, probe, probe_min,
                 max_candidates, tol, return_cupy):
    import cupy as cp

    from spear import _core

    Ld = cp.ascontiguousarray(cp.asarray(L, dtype=dtype))
    td = cp.asarray(thresh)
    cap = int(max_candidates)
    out_q = cp.empty((max(cap, 1), b), dtype=dtype)
    out_z = cp.empty(max(cap, 1), dtype=cp.int32)
    out_i = cp.empty(max(cap, 1), dtype=cp.int64)
    count = cp.zeros(1, dtype=cp.uint64)
    stream = cp.cuda.get_current_stream()
    _core.sample_cuda(Ld.data.ptr, td.data.ptr, dtype.name, m, b, int(seed), int(offset),
                      int(num_samples), min_zeros, probe, int(probe_min), out_q.data.ptr,
                      out_z.data.ptr, out_i.data.ptr, count.data.ptr, cap, stream.ptr)
    total = int(count.get()[0])
    k = min(total, cap)
    order = cp.argsort(out_i[:k])
    q, zeros, index = out_q[:k][order], out_z[:k][order], out_i[:k][order]
    if not return_cupy:
        q, zeros, index = q.get(), zeros.get(), index.get()
    return Directions(q, zeros, index, int(num_samples), total, "cuda", min_zeros, tol)
