"""Plain numpy reference of the sampler's per-sample math (the test oracle).

Mirrors ``csrc/include/spear/philox.h`` and ``csrc/include/spear/sampler.h`` operation for
operation, vectorized over samples instead of looping in C++. It is slow and meant for
tests and for reading: the CPU and CUDA kernels must accept the same samples and return
the same candidates (up to rounding) for the same seed.
"""
from __future__ import annotations

import numpy as np

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)


def philox4x32_10(counter: np.ndarray, key: np.ndarray) -> np.ndarray:
    """Philox4x32-10 of counters (..., 4) under keys (..., 2); returns (..., 4) uint32."""
    c = [np.asarray(counter[..., i], dtype=np.uint64) for i in range(4)]
    k0 = np.asarray(key[..., 0], dtype=np.uint64)
    k1 = np.asarray(key[..., 1], dtype=np.uint64)
    for _ in range(10):
        p0 = _M0 * c[0]
        p1 = _M1 * c[2]
        hi0, lo0 = p0 >> np.uint64(32), p0 & _MASK
        hi1, lo1 = p1 >> np.uint64(32), p1 & _MASK
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
        k0 = (k0 + _W0) & _MASK
        k1 = (k1 + _W1) & _MASK
    return np.stack([x.astype(np.uint32) for x in c], axis=-1)


class _Streams:
    """The per-sample word streams of many samples at once (see SampleStream in philox.h)."""

    def __init__(self, seed: int, samples: np.ndarray):
        samples = samples.astype(np.uint64)
        self.count = len(samples)
        self.key = np.array([seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF], dtype=np.uint64)
        self.s0 = samples & _MASK
        self.s1 = samples >> np.uint64(32)
        self.pos = np.zeros(self.count, dtype=np.int64)  # words consumed so far
        self._cache: dict[int, np.ndarray] = {}

    def _block(self, j: int, which: np.ndarray) -> np.ndarray:
        counter = np.stack(
            [self.s0[which], self.s1[which], np.full(len(which), j, np.uint64),
             np.zeros(len(which), np.uint64)], axis=-1)
        key = np.broadcast_to(self.key, (len(which), 2))
        return philox4x32_10(counter, key)

    def next(self, which: np.ndarray) -> np.ndarray:
        """Next word for the samples in ``which`` (indices into the batch)."""
        pos = self.pos[which]
        out = np.empty(len(which), dtype=np.uint64)
        for blk in np.unique(pos // 4):
            sel = (pos // 4) == blk
            words = self._block(int(blk), which[sel])
            out[sel] = words[np.arange(sel.sum()), pos[sel] % 4]
        self.pos[which] += 1
        return out

    def below(self, n: int, which: np.ndarray) -> np.ndarray:
        return ((self.next(which) * np.uint64(n)) >> np.uint64(32)).astype(np.int64)


def draw_rows(seed: int, samples: np.ndarray, m: int, k: int) -> np.ndarray:
    """(len(samples), k) distinct row indices per sample, in draw order."""
    streams = _Streams(seed, np.asarray(samples))
    rows = np.empty((streams.count, k), dtype=np.int64)
    for j in range(k):
        pending = np.arange(streams.count)
        while len(pending):
            r = streams.below(m, pending)
            duplicate = (rows[pending, :j] == r[:, None]).any(axis=1)
            rows[pending[~duplicate], j] = r[~duplicate]
            pending = pending[duplicate]
    return rows


def null_vectors(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit null vectors of a stack of k x b matrices (k = b-1), as in sampler.h.

    Returns (q, ok): q (s, b) with q[:, -1] > 0, ok False where a pivot vanished.
    """
    A = np.array(A, copy=True)
    s, k, b = A.shape
    ok = np.ones(s, dtype=bool)
    idx = np.arange(s)
    for c in range(k):
        p = c + np.argmax(np.abs(A[:, c:, c]), axis=1)
        ok &= np.abs(A[idx, p, c]) > 0
        rows_c, rows_p = A[idx, c, :].copy(), A[idx, p, :].copy()
        A[idx, c, :], A[idx, p, :] = rows_p, rows_c
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1 / A[:, c, c]
            f = A[:, c + 1:, c] * inv[:, None]
        A[:, c + 1:, c + 1:] -= f[:, :, None] * A[:, c, None, c + 1:]
        A[:, c, c] = inv                       # as sampler.h: back substitution multiplies
    # Back substitution and normalisation term by term in the kernel's order, with its
    # roundings (multiply by the stored reciprocals, then by 1/||q||): bit-identical q.
    q = np.zeros((s, b), dtype=A.dtype)
    q[:, b - 1] = 1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for c in range(k - 1, -1, -1):
            t = A[:, c, b - 1].copy()
            for j in range(c + 1, k):
                t = t + A[:, c, j] * q[:, j]
            q[:, c] = (-t) * A[:, c, c]
        norm2 = np.zeros(s, dtype=A.dtype)
        for j in range(b):
            norm2 = norm2 + q[:, j] * q[:, j]
        norm = np.sqrt(norm2)
        ok &= np.isfinite(norm) & (norm > 0)
        q = q * (A.dtype.type(1) / norm)[:, None]
    return q, ok


def sample_directions_reference(L: np.ndarray, thresh: np.ndarray, samples, *, seed: int,
                                min_zeros: int, probe: int = 0, probe_min: int = 0):
    """Evaluate ``samples`` (sample indices) exactly as the kernels do.

    Returns (q, zeros, index) of the accepted samples, sorted by sample index.
    """
    L = np.ascontiguousarray(L)
    m, b = L.shape
    samples = np.sort(np.asarray(samples, dtype=np.int64))
    k = b - 1
    rows = draw_rows(seed, samples, m, k)
    q, ok = null_vectors(L[rows])
    # L q accumulated term by term in L's dtype, in the kernel's order (not BLAS's), so
    # that rows sitting on the tolerance get the same verdict.
    Lq = np.zeros((len(q), m), dtype=L.dtype)
    for j in range(b):
        Lq += L[None, :, j] * q[:, j, None]
    is_zero = np.abs(Lq) <= thresh[None, :]                 # (s, m)
    zeros = is_zero.sum(axis=1)
    accept = ok & (zeros >= min_zeros)
    probe_end = min(probe, m)
    if probe_end > 0:
        in_probe = is_zero[:, :probe_end].sum(axis=1) - (rows < probe_end).sum(axis=1)
        accept &= in_probe >= probe_min
    return q[accept], zeros[accept].astype(np.int32), samples[accept]
