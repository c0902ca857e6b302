"""Candidate pool: de-duplicate, polish, and choose b independent directions.

Accepted proposals include true columns of Q (the zero set Z_i of one input) and, rarer,
mixtures of several columns whose zero set is the intersection of theirs, so always
smaller. Hence: sparsest first, and a mixture is dependent on the true columns it mixes.
"""
from __future__ import annotations

import numpy as np

from .budget import Budget, expired
from .tolerance import DUPLICATE_COS_GAP, INDEPENDENCE_TOL

#: Candidates polished per chunk: about this many rows' worth (a polish costs O(rows b^2));
#: narrow layers need many (untrained-to-trained width 200: the rare true columns are hit
#: 1-8 times in 2e6 samples and survive only when ~2000 raw candidates are polished).
POLISH_PER_CHUNK_ROWS = 400_000


def polish(L: np.ndarray, thresh: np.ndarray, q: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Refine a candidate from all its zero rows at once: the smallest right singular vector
    of those rows averages out the rounding (or noise) of the b-1 rows that produced it.
    Each row is weighted by 1 / its threshold, i.e. by its noise scale: relative rounding
    then means normalized rows, additive noise (DP, FedAvg) equal weights. Stops early
    once the zero rows stop changing (a fixed point, so repeats polish to one vector)."""
    b = L.shape[1]
    scale = np.maximum(np.asarray(thresh, dtype=np.float64), 1e-300)
    zero_before = None
    for _ in range(rounds):
        zero = np.abs(L @ q) <= thresh
        if zero.sum() < b - 1 or b == 1:
            break
        if zero_before is not None and np.array_equal(zero, zero_before):
            break
        rows = L[zero] / scale[zero, None]
        if len(rows) > b:
            # Same right singular vectors from the b x b triangle (QR is backward stable):
            # an SVD of the tall matrix also builds its left vectors, 10x the cost.
            rows = np.linalg.qr(rows, mode="r")
        v = np.linalg.svd(rows, full_matrices=len(rows) < b)[2][-1]
        q = v if v @ q >= 0 else -v
        zero_before = zero
    return q / np.linalg.norm(q)


#: :func:`regrow`: subspaces of up to this many dimensions, this many row samples each,
#: the few children with the most zeros polished. A trained MLP's weakest input (snr 780
#: beside inputs at 1e8): its column came out of the search as a soft mixture, 2.7e-7 off
#: in angle, 461 zeros where the column has 588; the column sat in the 4-dimensional
#: subspace and was found from every one of 5 seeds (2..6 dimensions, 256 samples, 4 kids).
REGROW_MAX_DIM, REGROW_SAMPLES, REGROW_KIDS, REGROW_STEPS = 6, 256, 4, 4


def regrow(L: np.ndarray, thresh: np.ndarray, q: np.ndarray, rng: np.random.Generator,
           steps: int = REGROW_STEPS) -> np.ndarray:
    """Directions near ``q`` with more zero rows than it has, polished (rows, maybe none).

    A weak input's column next to strong ones can be missed by a polish: a direction a
    hair away (q = p_weak + 3e-7 p_strong) is an exact fixed point on the rows where both
    are small, while the weak column's other zero rows (where the strong one is large)
    read thousands of sigmas. The column lies in the span of the few smallest right
    singular vectors of q's zero rows; there, one direction zeroes any d-1 further rows,
    and samples drawn from the weak column's extra zero rows all give it. Climbs: the
    sparsest child is regrown in turn, up to ``steps`` times."""
    b = L.shape[1]
    out = []
    for _ in range(steps):
        kids = _children(L, thresh, q, rng)
        if not len(kids):
            break
        out.extend(kids)
        q = kids[int(np.argmax(np.count_nonzero(np.abs(kids @ L.T) <= thresh[None, :], axis=1)))]
    return np.array(out).reshape(-1, b)


def _children(L, thresh, q, rng) -> np.ndarray:
    """One step of :func:`regrow`: polished directions in the low subspaces of q's zero
    rows (2 to REGROW_MAX_DIM dimensions) with more zeros than q."""
    b = L.shape[1]
    zero = np.abs(L @ q) <= thresh
    base = int(zero.sum())
    rest = np.flatnonzero(~zero)
    if base < b or len(rest) == 0:
        return np.empty((0, b))
    Vt = np.linalg.svd(L[zero], full_matrices=False)[2]
    kids = []
    for d in range(2, min(REGROW_MAX_DIM, b, len(rest) + 1) + 1):
        N = Vt[-d:].T                                          # b x d
        idx = np.argsort(rng.random((REGROW_SAMPLES, len(rest))), axis=1)[:, : d - 1]
        C = np.linalg.svd((L[rest] @ N)[idx], full_matrices=True)[2][:, -1, :]
        Q = C @ N.T
        z = (np.abs(Q @ L.T) <= thresh[None, :]).sum(axis=1)
        for i in np.argsort(-z)[:REGROW_KIDS]:
            v = polish(L, thresh, Q[i], rounds=3)
            if int(np.count_nonzero(np.abs(L @ v) <= thresh)) > base:
                kids.append(v)
    return np.array(kids).reshape(-1, b)


class CandidatePool:
    """Distinct directions found so far with their zero counts and how often each was hit."""

    def __init__(self, L: np.ndarray, thresh: np.ndarray, thresh_tight: np.ndarray | None = None,
                 per_chunk: int | None = None):
        # thresh groups raw sampler output; polished candidates are counted with thresh_tight.
        self.L, self.thresh = L, thresh
        self.thresh_tight = thresh if thresh_tight is None else thresh_tight
        self.per_chunk = per_chunk or max(256, 16 * L.shape[1], POLISH_PER_CHUNK_ROWS // L.shape[0])
        b = L.shape[1]
        self.q = np.empty((0, b))
        self.zeros = np.empty(0, dtype=np.int64)
        self.hits = np.empty(0, dtype=np.int64)
        self._patterns: dict[bytes, int] = {}    # tight zero set -> index (noise: same set, same vector)

    def __len__(self) -> int:
        return len(self.q)

    def add(self, q: np.ndarray, zeros: np.ndarray | None = None,
            budget: Budget | None = None) -> int:
        """Merge new raw candidates (k x b) with the kernel's zero counts; returns how many
        new distinct directions. Once ``budget`` has expired the rest of the candidates
        are dropped: they come sparsest first, so the best are in."""
        if len(q) == 0:
            return 0
        q = np.asarray(q, dtype=np.float64)
        hits = np.ones(len(q), dtype=np.int64)
        if zeros is not None and len(q) > 16 * self.per_chunk:
            # Sparsest first is all that matters: collapse repeats of one direction (rounded
            # coordinates, cheap), then skip the long tail before any O(k m) work.
            sign = np.where(q[np.arange(len(q)), np.argmax(np.abs(q), axis=1)] < 0, -1.0, 1.0)
            key = np.round(q * sign[:, None] * 1e4).astype(np.int64)
            _, first, counts = np.unique(key, axis=0, return_index=True, return_counts=True)
            top = np.lexsort((-counts, -np.asarray(zeros)[first]))[: 16 * self.per_chunk]
            q, hits = q[first[top]], counts[top]
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        # Many samples hit the same direction: group them by zero-row pattern first
        # (vectorized), then polish one representative per pattern.
        patterns = np.packbits(np.abs(q @ self.L.T) <= self.thresh[None, :], axis=1)
        _, first, inverse = np.unique(patterns, axis=0, return_index=True, return_inverse=True)
        counts = np.bincount(inverse.ravel(), weights=hits).astype(np.int64)
        # Only the sparsest few matter to a sparsest-first selection; the long tail is
        # mixtures of several columns (each one a different direction) and would cost
        # a polish each.
        raw_zeros = np.unpackbits(patterns[first], axis=1).sum(axis=1)
        keep = np.lexsort((-counts, -raw_zeros))[: self.per_chunk]
        before = len(self)
        for i, hits in zip(first[keep], counts[keep]):
            if expired(budget):
                break
            p = self._polished(q[i])
            zero = np.abs(self.L @ p) <= self.thresh_tight
            key = np.packbits(zero).tobytes()
            if key in self._patterns:
                self.hits[self._patterns[key]] += hits
                continue
            z = int(zero.sum())
            if len(self):
                cos = np.abs(self.q @ p)
                j = int(np.argmax(cos))
                if cos[j] > 1 - DUPLICATE_COS_GAP:
                    # One direction twice: keep the polish with more zeros (a weak
                    # column and a soft mixture of it can be 1e-13 apart in cos).
                    self.hits[j] += hits
                    if z > self.zeros[j]:
                        self.q[j], self.zeros[j] = p, z
                        self._patterns[key] = j
                    continue
            self._patterns[key] = len(self.q)
            self.q = np.vstack([self.q, p])
            self.zeros = np.append(self.zeros, z)
            self.hits = np.append(self.hits, hits)
        return len(self) - before

    def _polished(self, q: np.ndarray) -> np.ndarray:
        """Polish from the loose zero rows, then the tight ones; also straight from the
        tight ones, and keep whichever has more tight zeros. On a whitened factor whose
        rows are 1e8 noise sigmas long, one loose row that is not a zero (a barely active
        neuron) tilts the null vector by 1e-5 and leaves no tight zero at all (a trained
        MLP on digits: a true column came out with 0 zeros and ranked last)."""
        a = polish(self.L, self.thresh_tight, polish(self.L, self.thresh, q), rounds=3)
        if self.thresh_tight is self.thresh:
            return a
        t = polish(self.L, self.thresh_tight, q, rounds=3)
        za = int(np.count_nonzero(np.abs(self.L @ a) <= self.thresh_tight))
        zt = int(np.count_nonzero(np.abs(self.L @ t) <= self.thresh_tight))
        return t if zt > za else a

    def order(self) -> np.ndarray:
        """Sparsest first; ties broken by how often a direction was hit."""
        return np.lexsort((-self.hits, -self.zeros))


def greedy_independent(Q: np.ndarray, order: np.ndarray, b: int,
                       fixed: list[int] | None = None, tol: float = INDEPENDENCE_TOL) -> list[int]:
    """Walk ``order`` and keep directions independent of those kept so far (up to b):
    a residual norm above ``tol`` (raise it under noise, where two polishes of one column
    differ by more than rounding)."""
    chosen: list[int] = []
    basis = np.empty((0, Q.shape[1]))
    for i in list(fixed or []) + [int(i) for i in order]:
        if i in chosen:
            continue
        r = Q[i] - basis.T @ (basis @ Q[i])
        nr = np.linalg.norm(r)
        if nr > tol:
            chosen.append(i)
            basis = np.vstack([basis, r / nr])
            if len(chosen) == b:
                break
    return chosen
