"""``sample_directions``: the public entry to the compiled sampler (CPU or CUDA kernel).

One sample draws b-1 distinct rows of L with a Philox counter-based generator (so a seed
draws the same submatrices on every backend), takes the unit null vector of that
(b-1) x b submatrix, and keeps it when L q has enough near-zero rows. See
``csrc/include/spear/sampler.h`` for the exact rule and ``reference.py`` for the oracle.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from types import SimpleNamespace
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


def sampler_device(backend_name: str, b: int) -> str:
    """Where the sampler runs for a search on ``backend_name`` ("cpu" or "cuda") at batch
    size ``b``: "cuda" only when the backend is CUDA and the CUDA kernel handles b (its
    per-thread scratch is sized at compile time, ``_core.cuda_max_b``), else "cpu"."""
    from spear import _core

    if backend_name not in ("cpu", "cuda"):
        raise ValueError(f"backend_name must be 'cpu' or 'cuda', got {backend_name!r}")
    if backend_name == "cuda" and 1 <= int(b) <= int(_core.cuda_max_b):
        return "cuda"
    return "cpu"


def _is_torch(a) -> bool:
    return type(a).__module__.startswith("torch")


def _check_int(name: str, value, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name} must be {rng}, got {v}")
    return v


def sample_directions(L, num_samples: int, *, seed: int = 0, tol: float | None = None,
                      floor: float = 0.0, min_zeros: int | None = None, device: str = "auto", offset: int = 0,
                      probe: int | None = None, probe_min: int = 1,
                      max_candidates: int = 100_000, num_threads: int | None = None) -> Directions:
    """Evaluate samples ``offset .. offset + num_samples - 1`` of the SPEAR sampler on L.

    Parameters
    ----------
    L : (m, b) float32 or float64 array: numpy, CuPy or torch (CPU or CUDA); no all-zero
        rows. Results are CuPy arrays for CuPy input, torch tensors on L's device for a
        torch CUDA tensor (taken through DLPack, computed on torch's current stream),
        numpy otherwise.
    num_samples : how many random (b-1) x b submatrices to evaluate.
    seed : generator seed; the same (seed, sample index) draws the same rows everywhere.
    tol : relative zero tolerance, a row r counts as zero when |L_r q| <= tol * ||L_r||.
        Default 1e-9 for float64, 1e-4 for float32.
    floor : absolute zero tolerance added under noise: |L_r q| <= max(tol ||L_r||, floor).
    min_zeros : accept only candidates with at least this many zero rows (sampled rows
        included), in [0, m]. Default :func:`default_min_zeros`.
    device : "auto" (the array's device), "cpu" or "cuda". With "cuda" and b above the
        CUDA kernel's limit (``_core.cuda_max_b``) the CPU kernel runs instead
        (:func:`sampler_device`); ``Directions.backend`` says which ran.
    offset : index of the first sample (continue a stream in chunks).
    probe, probe_min : early test, reject unless ``probe_min`` of the first ``probe`` rows
        are zero beyond the sampled ones. Default probe: 64 rows for b >= 8, else off.
    max_candidates : keep at most this many candidates: the lowest sample indices, on
        every backend.
    num_threads : CPU threads (default: all cores).
    """
    from spear import _core

    c = _checked_call(L, num_samples, seed, tol, floor, min_zeros, device, offset, probe,
                      probe_min, max_candidates, num_threads)
    on_gpu = c.is_cupy or c.is_torch_cuda
    device = ("cuda" if on_gpu else "cpu") if c.device == "auto" else c.device
    fallback = False
    if device == "cuda":
        if not _backend.cuda_available():
            raise ValueError("device='cuda' but the CUDA path cannot run: "
                             + _backend._cuda_unavailable_reason())
        device = sampler_device("cuda", c.b)   # b above the CUDA kernel's limit: the CPU kernel
        fallback = device == "cpu"
    if device == "cpu":
        q, zeros, index, evaluated, total = _core.sample_cpu(
            np.ascontiguousarray(c.L_host), c.thresh, c.seed, c.offset, c.num_samples,
            c.min_zeros, c.probe, c.probe_min, c.max_candidates, c.num_threads)
        if fallback and on_gpu:   # asked for the GPU: results where the caller expects them
            q, zeros, index = (_like(L, a) for a in (q, zeros, index))
        return Directions(q, zeros, index, int(evaluated), int(total), "cpu", c.min_zeros, c.tol)
    return _sample_cuda(L, c.thresh, c.dtype, c.seed, c.offset, c.num_samples, c.min_zeros,
                        c.probe, c.probe_min, c.max_candidates, c.tol)


def _checked_call(L, num_samples, seed, tol, floor, min_zeros, device, offset, probe,
                  probe_min, max_candidates, num_threads) -> SimpleNamespace:
    """Every argument of :func:`sample_directions` checked (a clear error naming the
    problem, before anything reaches the kernels), with the thresholds and defaults."""
    is_torch = _is_torch(L)
    is_torch_cuda = is_torch and L.is_cuda
    is_cupy = hasattr(L, "__cuda_array_interface__") and not is_torch
    dtype = check_float_dtype(L, "L")
    if len(L.shape) != 2:
        raise ValueError(f"L must be 2-D (m x b), got shape {tuple(L.shape)}")
    m, b = (int(s) for s in L.shape)
    if b < 1 or m < b - 1:
        raise ValueError(f"L must have b >= 1 columns and at least b-1 rows, got shape {(m, b)}")
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 0:
        raise ValueError(f"num_samples must be a non-negative integer, got {num_samples!r}")
    num_samples = int(num_samples)
    seed = _check_int("seed", seed, 0, 2**64 - 1)
    offset = _check_int("offset", offset, 0, 2**64 - 1 - num_samples)
    probe_min = _check_int("probe_min", probe_min, 0, m)
    max_candidates = _check_int("max_candidates", max_candidates, 0)
    num_threads = _check_int("num_threads", 0 if num_threads is None else num_threads, 0, 4096)
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if is_torch:
        L_host = L.detach().cpu().numpy()
    else:
        L_host = L.get() if is_cupy else np.asarray(L)
    if not np.isfinite(L_host).all():
        raise ValueError("L contains NaN or Inf")
    if (~L_host.any(axis=1)).any():
        raise ValueError("L has all-zero rows; drop them first (L[L.any(axis=1)]): "
                         "they carry no information and would count as zeros of every proposal")
    tol = DEFAULT_TOL[dtype] if tol is None else float(tol)
    if not tol > 0 or not math.isfinite(tol):
        raise ValueError(f"tol must be a finite positive number, got {tol}")
    if not floor >= 0 or not math.isfinite(floor):
        raise ValueError(f"floor must be a finite non-negative number, got {floor!r}")
    thresh = row_thresholds(L_host, tol, floor)
    if min_zeros is None:
        min_zeros = default_min_zeros(m, b, tol) if floor == 0 else min_zeros_for(L_host, thresh)
    min_zeros = _check_int("min_zeros", min_zeros, 0, m)
    probe = default_probe(b) if probe is None else _check_int("probe", probe, 0)

    return SimpleNamespace(**{k: v for k, v in locals().items() if k != "L"})


def _like(L, a: np.ndarray):
    """A host result as the kind of device array L is (CuPy, or torch on L's device)."""
    if _is_torch(L):
        import torch

        return torch.from_numpy(a).to(L.device)
    import cupy as cp

    with cp.cuda.Device(L.device.id):
        return cp.asarray(a)


def _sample_cuda(L, thresh, dtype, seed, offset, num_samples, min_zeros, probe, probe_min,
                 max_candidates, tol):
    """The CUDA kernel on L's device and stream (CuPy's current stream, or torch's for a
    torch tensor); a numpy L goes to the current device."""
    import contextlib

    import cupy as cp

    from spear import _core

    is_torch = _is_torch(L)
    want = ("torch" if L.is_cuda else "numpy") if is_torch else \
        ("cupy" if hasattr(L, "__cuda_array_interface__") else "numpy")
    if is_torch:
        import torch

        dev_id = L.device.index if L.is_cuda else torch.cuda.current_device()
        stream_ctx = cp.cuda.ExternalStream(torch.cuda.current_stream(dev_id).cuda_stream, dev_id) \
            if L.is_cuda else contextlib.nullcontext()
    else:
        dev_id = L.device.id if want == "cupy" else cp.cuda.Device().id
        stream_ctx = contextlib.nullcontext()
    with cp.cuda.Device(dev_id), stream_ctx:
        if is_torch and L.is_cuda:
            Ld = cp.from_dlpack(L.detach())      # zero-copy, ordered on the current stream
        elif is_torch:
            Ld = cp.asarray(L.detach().numpy())
        else:
            Ld = cp.asarray(L)
        Ld = cp.ascontiguousarray(Ld, dtype=dtype)
        td = cp.asarray(thresh)
        cap = int(max_candidates)
        out_q = cp.empty((cap, Ld.shape[1]), dtype=dtype)
        out_z = cp.empty(cap, dtype=cp.int32)
        out_i = cp.empty(cap, dtype=cp.int64)
        count = cp.zeros(1, dtype=cp.uint64)
        stream = cp.cuda.get_current_stream()
        _core.sample_cuda(Ld, td, seed, offset, num_samples, min_zeros, probe, probe_min,
                          out_q, out_z, out_i, count, stream.ptr)
        total = int(count.get()[0])
        k = min(total, cap)
        # Ordered compaction: the first k slots are the k lowest accepted sample indices.
        q, zeros, index = out_q[:k], out_z[:k], out_i[:k]
        if want == "torch":
            q, zeros, index = (torch.from_dlpack(a) for a in (q, zeros, index))
        elif want == "numpy":
            q, zeros, index = q.get(), zeros.get(), index.get()
    return Directions(q, zeros, index, int(num_samples), total, "cuda", min_zeros, tol)


#: The sampler is out of reach once its expected sample count passes this (about a day
#: of the CPU kernel at 7e5 samples/s on two cores).
SAMPLER_REACH = 1e11


def expected_samples(b: int, rho: float) -> float:
    """Samples the sampler needs to hit all b columns when each column is zero on a
    fraction ``rho`` of the rows: rho^-(b-1) per column, times the harmonic number of b
    (coupon collector)."""
    if rho <= 0:
        return math.inf
    return sum(1.0 / k for k in range(1, b + 1)) * rho ** -(b - 1)
