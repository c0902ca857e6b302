"""Low-rank factorisation of the weight gradient: gW = L R with L = U_b S_b^1/2, R = S_b^1/2 V_b^T.

Only the top-b singular triplets are needed. When n is much larger than m (ImageNet
inputs: n up to 1.5e6) we never form an n x n matrix: an eigendecomposition of the
m x m Gram matrix gives the left subspace, then one Rayleigh-Ritz step on the range of
gW^T U (n x b) restores full accuracy (the Gram matrix alone squares the condition number).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tolerance import rank_floor

# A gradient this much larger in n than m goes through the Gram matrix.
GRAM_RATIO = 2


@dataclass
class Factorization:
    L: object          # m x b (xp array)
    R: object          # b x n
    singular_values: np.ndarray  # leading singular values (numpy), at least b + 1 when available
    noise_floor: float  # singular values below this are numerical noise


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
        spectrum = np.sqrt(np.clip(_np(xp, w), 0, None))
        Uk = V[:, :k]
        # Rayleigh-Ritz on span(A^T Uk): accurate to rounding of A, not of A A^T.
        B, _ = xp.linalg.qr(A.T @ Uk)                  # (big x k), orthonormal
        C = A @ B                                      # (small x k)
        Uc, s, Wt = xp.linalg.svd(C, full_matrices=False)
        U, Vt = Uc, Wt @ B.T
        if transpose:
            U, Vt = Vt.T, U.T
        spectrum[:k] = _np(xp, s)
        return U, s, Vt, spectrum
    U, s, Vt = xp.linalg.svd(gW, full_matrices=False)
    return U[:, :k], s[:k], Vt[:k], _np(xp, s)


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


def numerical_rank(spectrum: np.ndarray, floor: float) -> int:
    """Number of singular values above the noise floor (the batch size of an exact gradient)."""
    return int(np.count_nonzero(spectrum > floor))


def factorize(xp, gW, batch_size: int | None, dtype: np.dtype) -> Factorization:
    """Factor gW = L R for ``batch_size`` (inferred from the spectrum when None).

    Raises ValueError when the gradient is zero or its numerical rank is below batch_size.
    """
    m, n = gW.shape
    kmax = min(m, n)
    want = kmax if batch_size is None else min(kmax, batch_size + 1)
    U, s, Vt, spectrum = leading_spectrum(xp, gW, want)
    if not spectrum[0] > 0:
        raise ValueError("the gradient is zero: there is nothing to reconstruct")
    floor = rank_floor(spectrum[0], dtype, (m, n))
    rank = numerical_rank(spectrum, floor)
    if batch_size is None:
        batch_size = rank
    elif batch_size > rank:
        raise ValueError(
            f"batch_size {batch_size} exceeds the numerical rank {rank} of grad_weight "
            f"(singular values {spectrum[max(rank - 1, 0)]:.3g} then {spectrum[rank] if rank < len(spectrum) else 0:.3g} "
            "against a noise floor {:.3g}): the gradient cannot come from that many distinct inputs".format(floor))
    b = batch_size
    root = xp.sqrt(s[:b])
    L = U[:, :b] * root[None, :]
    R = root[:, None] * Vt[:b]
    return Factorization(L=L, R=R, singular_values=spectrum[: b + 1].copy(), noise_floor=floor)


def _np(xp, a) -> np.ndarray:
    return a.get() if xp is not np else np.asarray(a)
