"""Low-rank factorisation of the weight gradient: gW = L R with L = U_b S_b^1/2, R = S_b^1/2 V_b^T.

Only the top-b singular triplets are needed. When n is much larger than m (ImageNet
inputs: n up to 1.5e6) we never form an n x n matrix: an eigendecomposition of the
m x m Gram matrix gives the left subspace, then one Rayleigh-Ritz step on the range of
gW^T U (n x b) restores full accuracy (the Gram matrix alone squares the condition number).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import host
from .tolerance import RANK_GAP, RANK_MIN_STEP, rank_level

# A gradient this much larger in n than m goes through the Gram matrix.
GRAM_RATIO = 2


@dataclass
class Factorization:
    L: object          # m x b (xp array)
    R: object          # b x n
    singular_values: np.ndarray  # leading singular values (numpy), at least b + 1 when available
    rank: "RankEstimate"         # what the spectrum's structure says
    requested: int               # the batch size asked for (>= b: the rest is below the level)


def leading_spectrum(xp, gW, k: int):
    """Top-k singular triplets (U m x k, s k, Vt k x n) of gW, plus the singular values
    of the full spectrum that were computed on the way (for rank inference)."""
    m, n = gW.shape
    if n > GRAM_RATIO * m or m > GRAM_RATIO * n:
        transpose = m > GRAM_RATIO * n
        A = gW.T if transpose else gW
        G = A @ A.T
        w, V = xp.linalg.eigh(G)                       # ascending
        w, V = w[::-1], V[:, ::-1]
        # The Gram matrix's small eigenvalues are only accurate to ~eps s_1^2 (singular
        # values ~1e-8 s_1): the whole spectrum, which the batch size is read from, comes
        # from the triangular factor of A^T instead (backward stable, never n x n).
        spectrum = host(xp.linalg.svd(xp.linalg.qr(A.T, mode="r"), compute_uv=False))
        Uk = V[:, :k]
        # Rayleigh-Ritz on span(A^T Uk): accurate to rounding of A, not of A A^T.
        B, _ = xp.linalg.qr(A.T @ Uk)                  # (big x k), orthonormal
        C = A @ B                                      # (small x k)
        Uc, s, Wt = xp.linalg.svd(C, full_matrices=False)
        U, Vt = Uc, Wt @ B.T
        if transpose:
            U, Vt = Vt.T, U.T
        spectrum[:k] = host(s)
        return U, s, Vt, spectrum
    U, s, Vt = xp.linalg.svd(gW, full_matrices=False)
    return U[:, :k], s[:k], Vt[:k], host(s)


def relative_noise(spectrum: np.ndarray, b: int) -> float:
    """Noise of a rank-b factor relative to its weakest direction: what lies beyond the
    b-th singular value (or float64 rounding of the largest), over the b-th."""
    eps = float(np.finfo(np.float64).eps)
    beyond = float(spectrum[b]) if len(spectrum) > b else 0.0
    return max(beyond, eps * float(spectrum[0])) / float(spectrum[b - 1])


def noise_std(spectrum: np.ndarray, b: int, m: int, n: int) -> float:
    """Entry-wise standard deviation of additive noise in gW (DP-SGD, FedAvg drift),
    read off the spectrum: an m x n matrix of i.i.d. noise of std sigma has largest
    singular value ~ sigma (sqrt(m) + sqrt(n)), and the (b+1)-th singular value is the
    largest that the batch does not explain. Zero when there is no (b+1)-th value."""
    if len(spectrum) <= b:
        return 0.0
    return float(spectrum[b]) / (np.sqrt(m) + np.sqrt(n))


def noise_scale(spectrum: np.ndarray, b: int, m: int, n: int) -> float:
    """Standard deviation of that noise in L q for a unit q (L = U_b S_b^1/2 = gW V_b
    S_b^-1/2, so the noise is N V_b S_b^-1/2 q, at most sigma / sqrt(s_b) per row).
    Measured on MNIST under DP-SGD: the true zero rows of L q lie within 2.4 of it."""
    return noise_std(spectrum, b, m, n) / float(np.sqrt(spectrum[b - 1]))


@dataclass
class RankEstimate:
    """Where the spectrum falls to the level no input reaches (see tolerance.RANK_*).
    rank: the evident batch size, or None when the spectrum shows no gap (additive noise
    over everything, or a batch of half the smaller dimension or more)."""

    rank: int | None
    level: float
    above: int          # singular values above RANK_GAP * level

    def describe(self, spectrum: np.ndarray) -> str:
        r = self.above
        edge = (f"s{r} = {spectrum[r - 1]:.3g}, " if r else "") + (
            f"s{r + 1} = {spectrum[r]:.3g}" if r < len(spectrum) else "")
        return f"{edge} against a level of {self.level:.3g} ({RANK_GAP:g}x: {RANK_GAP * self.level:.3g})"


def evident_rank(spectrum: np.ndarray, shape: tuple[int, int], dtype) -> RankEstimate:
    """The batch size the spectrum shows, from its structure rather than a fixed floor."""
    s = np.asarray(spectrum, dtype=np.float64)
    level = rank_level(s, dtype)
    r = int(np.count_nonzero(s > RANK_GAP * level))
    step = s[r - 1] / max(float(s[r]), 1e-300) if 0 < r < len(s) else np.inf
    gap = 0 < r < min(shape) // 2 and step >= RANK_MIN_STEP
    return RankEstimate(rank=r if gap else None, level=level, above=r)


def factorize(xp, gW, batch_size: int | None, dtype: np.dtype) -> Factorization:
    """Factor gW = L R for ``batch_size`` (inferred from the spectrum when None).

    With a batch_size larger than the evident rank r, only r inputs stand above the level
    of rounding or noise: the factor has r columns (the rest cannot be recovered by anyone,
    and the result says so). Raises ValueError when the gradient is zero, when batch_size
    is smaller than the evident rank, or when there is no gap to infer it from.
    """
    m, n = gW.shape
    kmax = min(m, n)
    want = kmax if batch_size is None else min(kmax, batch_size + 1)
    U, s, Vt, spectrum = leading_spectrum(xp, gW, want)
    if not spectrum[0] > 0:
        raise ValueError("the gradient is zero: there is nothing to reconstruct")
    est = evident_rank(spectrum, (m, n), dtype)
    if batch_size is None:
        if est.rank is None:
            raise ValueError("cannot infer the batch size: the singular values of grad_weight show "
                             f"no gap ({est.above} above the cut; {est.describe(spectrum)}); "
                             "pass batch_size")
        b = est.rank
    elif est.rank is not None and est.rank > batch_size:
        raise ValueError(
            f"batch_size {batch_size} is smaller than the evident rank {est.rank} of grad_weight "
            f"({est.describe(spectrum)}): {batch_size} inputs cannot explain it; pass "
            f"batch_size={est.rank} or None")
    else:
        b = batch_size if est.rank is None else est.rank
    root = xp.sqrt(s[:b])
    L = U[:, :b] * root[None, :]
    R = root[:, None] * Vt[:b]
    return Factorization(L=L, R=R, singular_values=spectrum[: b + 1].copy(), rank=est,
                         requested=batch_size if batch_size is not None else b)
