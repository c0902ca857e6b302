"""Neighbour search: the column of an input that looks like one already found.

Why
---
Two inputs that look alike (two 4s of one batch) switch on nearly the same neurons, so
their columns of dZ share most zero rows: trained MLP on MNIST, b = 50, the four columns
the dictionary never reached each had a twin sharing 514-535 of its ~600 zero rows
(inputs at cos 0.77-0.88). A mixture of the two then has almost as many zeros as either
column, and sparse recovery over all of L is drawn to the pair's mixtures (the selection
filled those four slots with mixtures and 100 s of further dictionary rounds added none).

Restricted to the rows where a found column q_a is zero, the problem changes: there the
twin's column is zero on ~88% of the rows (its share of Z_a) and any other column on
~rho of them, so it is by far the sparsest vector left, and the dictionary's own
machinery finds it from 3 b starts (measured: all four twins, 0.21 s per searched column
at b = 50, m = 1000). On those rows q_a itself vanishes, so the search runs in the
complement of q_a, and the twin comes back up to a multiple of q_a, restored from the
other rows (:func:`_restore`).

A chosen direction that is a mixture (of two columns) gives its parts the same way: on
its zero rows both parts vanish.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .budget import Budget
from .dictionary import dictionary_proposals
from .select import polish
from .tolerance import DUPLICATE_COS

#: A neighbour must vanish on at least this fraction of the found column's zero rows.
#: Measured twins share 0.85-0.88 of them; an unrelated column shares about its own zero
#: fraction (0.5-0.6 on ReLU layers), which this keeps out of the sub-problem's results.
NEIGHBOUR_MIN_SHARE = 0.7
#: ADM starts per column of the sub-problem, and ADM steps. Measured on five neighbours
#: of two b = 50 batches (shares 0.79-0.88), 8 seeds each: b starts and 50 steps found
#: 27 of 32, 2 b starts 32 of 32 (the same with 100 steps); on the hardest one (share
#: 0.79), 40 more seeds: 2 b starts 34 of 40, 3 b and 4 b 40 of 40; 0.13, 0.18, 0.21 and
#: 0.25 s per search.
NEIGHBOUR_STARTS_PER_COLUMN, NEIGHBOUR_ADM_ITERS = 3, 50
#: Searches per selected direction, each from other starts (a search can miss).
NEIGHBOUR_TRIES = 2
#: Most directions one turn searches (~0.21 s each at b = 50), and the fraction of the
#: time left it may take: the leading sources get their turns in between. Searching all
#: 49 selected directions in one turn cost a random-init b = 50 batch 9.6 s that the
#: dictionary's next round would have finished.
NEIGHBOURS_PER_TURN, NEIGHBOURS_TIME_SHARE = 8, 0.5
#: The search runs only when two selected directions share more than this fraction of
#: the smaller one's zero rows (a look-alike pair among the inputs found, so likely more
#: among those missing). Zero-row shares, max over pairs of true columns: trained MLPs and
#: FCNNs on MNIST (6 batches, b = 20 and 50) 0.91-0.94, with 34-1046 pairs above 0.75;
#: Gaussian inputs at random init (b = 50, 100, 128) 0.57-0.59, none above. Without the
#: gate a b = 100 random-init batch spent 124 of 181 s in fruitless searches (~5 s each).
LOOKALIKE_SHARE = 0.75
#: Rows outside Z_a whose multiple of q_a is read in :func:`_restore` (the ones where q_a
#: is largest, so each gives the multiple precisely).
RESTORE_ROWS = 64


def neighbours(A: np.ndarray, thresh: np.ndarray, qa: np.ndarray, *, seed: int = 0,
               budget: Budget | None = None) -> np.ndarray:
    """Directions that vanish on most of the zero rows of ``qa`` (rows, unit, polished).

    A: (m, b) factor whose row k is zero for p when |A_k p| <= thresh[k] (p unit).
    qa: (b,) a found direction (a column of Q, or a mixture of a few).
    """
    m, b = A.shape
    qa = np.asarray(qa, dtype=np.float64) / np.linalg.norm(qa)
    Aq = A @ qa
    Za = np.abs(Aq) <= thresh
    if b < 3 or Za.sum() < 2 * b:
        return np.empty((0, b))
    N = np.linalg.svd(qa[None, :])[2][1:].T                      # b x (b-1): qa's complement
    C = dictionary_proposals(A[Za] @ N, thresh=thresh[Za],
                             min_zeros=int(NEIGHBOUR_MIN_SHARE * Za.sum()), seed=seed,
                             num_starts=NEIGHBOUR_STARTS_PER_COLUMN * b,
                             adm_iters=NEIGHBOUR_ADM_ITERS, basis="plain", descend=False,
                             budget=budget)
    out = [_restore(A, thresh, qa, Aq, N @ c, Za) for c in C]
    out = [q for q in out if abs(q @ qa) < DUPLICATE_COS]
    return np.array(out).reshape(-1, b)


def _restore(A, thresh, qa, Aq, v, Za) -> np.ndarray:
    """The direction v + alpha qa with the most zero rows, polished (Aq = A qa). On Z_a
    every alpha gives the same values; each row outside Z_a where the neighbour vanishes
    pins alpha (-A_k v / A_k qa), so the candidates are those rows' values (and 0)."""
    v = v / np.linalg.norm(v)
    Av = A @ v
    out = np.flatnonzero(~Za)
    rows = out[np.argsort(-np.abs(Aq[out]))[:RESTORE_ROWS]]
    alphas = np.concatenate([[0.0], -Av[rows] / Aq[rows]])
    zeros = (np.abs(Av[:, None] + Aq[:, None] * alphas[None, :]) <= thresh[:, None]).sum(axis=0)
    q = v + alphas[int(np.argmax(zeros))] * qa
    return polish(A, thresh, q / np.linalg.norm(q), rounds=3)


def has_lookalikes(zero: np.ndarray, share: float = LOOKALIKE_SHARE) -> bool:
    """Whether two columns of the zero pattern (rows x directions, bool) share more than
    ``share`` of the smaller one's zero rows."""
    if zero.shape[1] < 2:
        return False
    Zf = zero.astype(np.float64)
    n = np.maximum(Zf.sum(axis=0), 1.0)
    S = (Zf.T @ Zf) / np.minimum.outer(n, n)
    np.fill_diagonal(S, 0.0)
    return bool(S.max() > share)


@dataclass
class Neighbours:
    """:func:`neighbours` of each selected direction, ``tries`` times from other starts:
    a turn searches up to ``per_turn`` of those searched fewest times so far (within
    ``time_share`` of the time left), and only while the selection holds a look-alike
    pair (:func:`has_lookalikes`).
    It follows the other sources (``follows``): ``exhausted`` says the last turn found
    every selected direction searched ``tries`` times, and the next selection may bring
    new ones."""

    name: str = "neighbours"
    exhausted: bool = False
    follows: bool = True
    time_share: float = NEIGHBOURS_TIME_SHARE
    tries: int = NEIGHBOUR_TRIES
    per_turn: int = NEIGHBOURS_PER_TURN
    lookalike_share: float | None = LOOKALIKE_SHARE     # the gate (None: always search)
    searched: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))  # directions (rows)
    times: list = field(default_factory=list)                               # searches of each

    def propose(self, problem, known, budget: Budget, seed: int):
        from .sources import Proposal

        b = problem.b
        empty = np.empty((0, b))
        self.exhausted = len(known) == 0
        if self.exhausted:
            return Proposal(empty)
        P = problem.to_search(np.asarray(known, dtype=np.float64))      # unit rows
        A, thresh = problem.search, problem.tolerances.thresh_pool
        if self.lookalike_share is not None and not has_lookalikes(
                np.abs(A @ P.T) <= thresh[:, None], self.lookalike_share):
            self.exhausted = True
            return Proposal(empty)
        index = [self._index(p) for p in P]
        count = np.array([self.times[i] for i in index])
        todo = np.flatnonzero(count < self.tries)
        self.exhausted = not len(todo)
        if self.exhausted:
            return Proposal(empty)
        todo = todo[count[todo] == count[todo].min()][: self.per_turn]   # second tries last
        found, turn = [], budget.share(self.time_share)
        for i in todo:
            if turn.expired():
                break
            found.append(neighbours(A, thresh, P[i], seed=seed + 7919 * self.times[index[i]] + int(i),
                                    budget=turn))
            self.times[index[i]] += 1
        q = np.concatenate(found) if found else empty
        return Proposal(problem.to_factor(q) if len(q) else q)

    def _index(self, p: np.ndarray) -> int:
        """Index of p among the directions seen (added when new)."""
        if self.searched.size:
            cos = np.abs(self.searched @ p)
            j = int(np.argmax(cos))
            if cos[j] > DUPLICATE_COS:
                return j
        self.searched = p[None, :] if not self.searched.size else np.vstack([self.searched, p])
        self.times.append(0)
        return len(self.times) - 1

    def observe(self, added: int) -> None:
        pass
