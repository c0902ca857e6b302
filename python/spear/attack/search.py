"""Search: direction sources take turns, one pool and one selection, one budget.

Each round, every active source proposes directions; they are merged into the pool
(de-duplicated, polished) and the selection is redone: b independent directions,
sparsest first, then certificate-guided single swaps. The first round ends early when a
source adds directions (the search checks whether it is done before running the next
source: a broad dictionary round often finds the whole batch). The search stops when
the selection is certified, the budget is spent, or every source is exhausted (a source
that ``follows`` the others, like the neighbour search, only after them).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .budget import Budget, expired
from .certify import Certificate
from .problem import Problem
from .scale import scales
from .select import CandidatePool, greedy_independent, regrow
from .tolerance import ELIGIBLE_FALLBACK_FACTOR, ELIGIBLE_ZERO_FRACTION


#: Chosen directions with fewer zeros than this fraction of the chosen median are regrown
#: (mixtures have the intersection of their columns' zero sets). Trained MLP, MNIST, b = 50:
#: a first dictionary round chose 37 true columns and 8 others with 289-514 zeros (true
#: columns 547-652, median about 600); regrowing those 8 gave 4 more true columns in 0.4 s.
#: Not 1.0 (half of every selection): at random init, b = 128, m = 2000, that regrew 65
#: true columns (zeros 935-1061) for nothing, 6 of 49 s.
REGROW_ZERO_FRACTION = 0.9

#: Certificate-guided swaps are tried when at most this many columns violate the sign
#: rule (they replace one column at a time, in at most 4 rounds; a trained MLP's early
#: selections have 10-20 wrong columns and took seconds per round to try).
MAX_SWAPPED = 4


@dataclass
class Selection:
    """b chosen directions, scaled: Q (b x b), the inputs X = Q^-1 R, their certificate."""

    Q: Any
    X: Any
    certificate: Certificate | None


@dataclass
class SearchOutcome:
    selection: Selection | None      # None: fewer than b independent directions found
    directions: np.ndarray           # (b, k) unit directions of the last selection
    found: int
    pool_size: int
    candidates: int                  # raw proposals merged into the pool
    rounds: dict[str, int] = field(default_factory=dict)   # turns per source
    seconds: dict[str, float] = field(default_factory=dict)
    exhausted: bool = False          # every source ran out of proposals
    zero_fraction: float | None = None   # median zero fraction of the selected directions


class Selector:
    """Selection state across rounds: greedy choice, then certificate-guided swaps."""

    def __init__(self, problem: Problem, budget: Budget):
        self.problem, self.budget = problem, budget
        self.tol = problem.tolerances.independence
        self.found = 0
        self.seconds = 0.0
        self.best_directions = np.empty((0, 0))
        self.chosen: list[int] = []
        self._last_key: tuple = ()
        self._last_choice: list[int] = []
        self._regrown: set[int] = set()
        self._certs: dict[tuple, Certificate] = {}   # this selection's certificates, by choice

    def select(self, pool: CandidatePool) -> Selection | None:
        """A :class:`Selection` once b independent directions are in the pool, else None."""
        t0 = time.perf_counter()
        self._certs = {}
        try:
            b = self.problem.b
            order, chosen = self._greedy(pool)
            if self._regrow(pool, chosen):
                order, chosen = self._greedy(pool)
            if len(chosen) < b:
                return None
            if self.problem.certifier is not None:
                chosen, order = self._most_hit_if_better(pool, order, chosen)
                if self._regrow(pool, chosen, rejected=True):
                    order, chosen = self._greedy(pool)
                    chosen, order = self._most_hit_if_better(pool, order, chosen)
                chosen = self.chosen = self._revisit(pool, order, chosen)
                self.best_directions = self._in_factor(pool.q[chosen])
            Q = self._scaled(pool.q[chosen])
            X = self.problem.xp.linalg.solve(Q, self.problem.R)
            cert = self._certify(pool, chosen) if self.problem.certifier is not None else None
            return Selection(Q, X, cert)
        finally:
            self.seconds += time.perf_counter() - t0

    def _greedy(self, pool):
        """Sparsest first among the eligible candidates; b independent ones if there are."""
        order = pool.order()
        if not len(order):
            return order, []
        zeros, top = pool.zeros[order], pool.zeros[order[0]]
        order_main = order[zeros >= ELIGIBLE_ZERO_FRACTION * top]
        chosen = greedy_independent(pool.q, order_main, self.problem.b, tol=self.tol)
        if len(chosen) < self.problem.b:
            floor = ELIGIBLE_FALLBACK_FACTOR * self.problem.tolerances.min_zeros
            rest = order[(zeros < ELIGIBLE_ZERO_FRACTION * top) & (zeros >= floor)]
            chosen = greedy_independent(pool.q, rest, self.problem.b, fixed=chosen, tol=self.tol)
            order_main = np.concatenate([order_main, rest])
        order = order_main
        self.found, self.chosen = len(chosen), chosen
        self.best_directions = self._in_factor(pool.q[chosen])
        return order, chosen

    def _regrow(self, pool, chosen, rejected: bool = False) -> bool:
        """Give chosen directions that look like mixtures the directions near them with more
        zeros (:func:`select.regrow`), each once; True when the pool gained any. Mixtures
        have fewer zeros than the columns they mix (below REGROW_ZERO_FRACTION of the
        chosen median), or, with ``rejected``, violate the certificate (at most
        MAX_SWAPPED columns)."""
        if not chosen:
            return False
        if rejected:
            cert = self._certify(pool, chosen)
            bad = [chosen[i] for i in np.flatnonzero(cert.per_column)]
            todo = [] if cert.certified or len(bad) > MAX_SWAPPED else bad
        else:
            zeros = pool.zeros[chosen]
            todo = [c for c, z in zip(chosen, zeros) if z < REGROW_ZERO_FRACTION * np.median(zeros)]
        todo = [i for i in todo if i not in self._regrown]
        if todo:
            self._certs = {}          # the pool may replace a direction by a better polish
        added = 0
        for i in todo:
            if expired(self.budget):
                break
            self._regrown.add(i)
            kids = regrow(pool.L, pool.thresh_tight, pool.q[i], np.random.default_rng(i))
            added += pool.add(kids, budget=self.budget) if len(kids) else 0
        return added > 0

    def _certify(self, pool, chosen: list[int]) -> Certificate:
        """The certificate of a choice, computed once per selection."""
        key = tuple(chosen)
        if key not in self._certs:
            self._certs[key] = self.problem.certifier(self._scaled(pool.q[chosen]))
        return self._certs[key]

    def _most_hit_if_better(self, pool, order, chosen):
        """Sparsest first can be wrong when the batch is barely sparse (a trained MLP on
        all-positive digits: 3-9 exact zeros per column, so "sparsest" counts rows below
        the noise): a proposal the sources found once can outrank the true columns, which
        the sampler hits again and again. If the set chosen most-hit first certifies
        better, it wins (one certificate more per selection)."""
        by_hits = order[np.lexsort((-pool.zeros[order], -pool.hits[order]))]
        other = greedy_independent(pool.q, by_hits, self.problem.b, tol=self.tol)
        if len(other) < self.problem.b or sorted(other) == sorted(chosen):
            return chosen, order
        if self._certify(pool, other).badness() < self._certify(pool, chosen).badness():
            return other, by_hits
        return chosen, order

    def _in_factor(self, Prows: np.ndarray) -> np.ndarray:
        """(b, k) unit columns in L's coordinates."""
        if len(Prows) == 0:
            return np.empty((self.problem.b, 0))
        return self.problem.to_factor(Prows).T.copy()

    def _scaled(self, Prows: np.ndarray):
        p = self.problem
        Qunit = p.xp.asarray(self._in_factor(Prows))
        return Qunit * scales(p.xp, p.L, Qunit, p.gb)[None, :]

    def _revisit(self, pool, order, chosen, max_rounds: int = 4) -> list[int]:
        """Second stage: while the certificate fails, make the single swap (one chosen
        direction out, one pool direction in, independence kept) that removes the most
        violations. Fixes sets where a mixture of two columns outranked a true column.
        Bounded: the most-violating columns, the sparsest spare candidates, and only when
        the pool changed since the last attempt."""
        key = (len(pool), tuple(chosen))
        if key == self._last_key:
            return self._last_choice
        b = self.problem.b
        best = self._certify(pool, chosen)
        if int(np.count_nonzero(best.per_column)) > MAX_SWAPPED:
            # Single swaps cannot mend that many wrong columns: let the sources find more
            # first (each attempt costs up to 4 x (2b + 16) certificates).
            self._last_key, self._last_choice = key, chosen
            return chosen
        spares = [int(c) for c in order if int(c) not in chosen][: 2 * b + 16]
        for _ in range(max_rounds):
            if best.certified or expired(self.budget):
                break
            improved = None
            worst = np.lexsort((-best.column_rates, -best.per_column))
            for pos in worst[:4]:
                rest = chosen[:pos] + chosen[pos + 1:]
                for cand in spares:
                    if expired(self.budget):
                        break
                    if cand in chosen:
                        continue
                    trial = greedy_independent(pool.q, np.array([cand]), b, fixed=rest, tol=self.tol)
                    if len(trial) < b:
                        continue
                    cert = self._certify(pool, trial)
                    if cert.badness() < best.badness():
                        best, improved = cert, trial
            if improved is None:
                break
            chosen = improved
        self._last_key, self._last_choice = key, chosen
        return chosen


def search(problem: Problem, sources: list, budget: Budget, *, seed: int = 0,
           progress: bool = False) -> SearchOutcome:
    """Let ``sources`` take turns until the selection is done or the budget is spent."""
    tol = problem.tolerances
    # The pool lives in the search's coordinates (the whitened factor); sources propose
    # in L's, the selection hands L's coordinates on.
    pool = CandidatePool(problem.search, tol.thresh, tol.thresh_pool)
    selector = Selector(problem, budget)
    raw, turns, seconds = 0, {s.name: 0 for s in sources}, {s.name: 0.0 for s in sources}
    selection = None
    if problem.b == 1:
        # One input: the only direction is 1; nothing to search.
        pool.add(np.ones((1, 1)))           # the same in every coordinates
        selection, sources = selector.select(pool), []
    bar = _progress_bar(progress, budget, problem.b)
    first_pass, without_proof_from = True, None
    try:
        while active := _active(sources):
            stop = False
            for source in active:
                if expired(budget):
                    stop = True
                    break
                before = selector.found
                t0 = time.perf_counter()
                proposal = source.propose(problem, selector.best_directions.T, budget, seed)
                if proposal.stop:
                    stop = True
                    break
                raw += len(proposal.q)
                if len(proposal.q):
                    pool.add(problem.to_search(proposal.q), proposal.zeros, budget)
                seconds[source.name] += time.perf_counter() - t0
                turns[source.name] += 1
                selection = selector.select(pool)
                source.observe(selector.found - before)
                if first_pass and selector.found > before:
                    break
            first_pass = False
            if bar is not None:
                bar.update(budget.samples - bar.n)
                bar.set_postfix(found=f"{selector.found}/{problem.b}", pool=len(pool))
            if stop:
                break
            done, without_proof_from = _done(problem, selection, budget, without_proof_from)
            if done:
                break
    finally:
        if bar is not None:
            bar.close()
    seconds["selection"] = selector.seconds
    zeros = pool.zeros[selector.chosen] if len(selector.chosen) else None
    return SearchOutcome(selection, selector.best_directions, selector.found, len(pool), raw,
                         turns, seconds, exhausted=bool(sources) and all(s.exhausted for s in sources),
                         zero_fraction=None if zeros is None else float(np.median(zeros)) / len(pool.L))


def _active(sources: list) -> list:
    """The sources that take a turn in this pass. A source with ``follows`` True works on
    what the others found (its ``exhausted``: nothing to do at its last turn): it takes
    every turn while another source is active, and after them until it has nothing to do."""
    follows = [bool(getattr(s, "follows", False)) for s in sources]
    leading = any(not s.exhausted for s, f in zip(sources, follows) if not f)
    if not leading and all(s.exhausted for s, f in zip(sources, follows) if f):
        return []
    return [s for s, f in zip(sources, follows) if f or not s.exhausted]


def _done(problem: Problem, selection: Selection | None, budget: Budget, first: int | None):
    """Whether to stop: a certified selection ends the search. Without a proof (no layer
    given, or noise), search on until twice the samples that first gave b directions, so
    that a mixture standing in for a still-missing column can still be replaced.
    Returns (done, samples when b directions were first found without proof)."""
    if selection is None:
        return False, first
    cert = selection.certificate
    if cert is not None and cert.certified:
        return True, first
    if cert is None or cert.consistent:
        first = budget.samples if first is None else first
        return budget.samples >= 2 * first, first
    return False, first


def _progress_bar(enabled: bool, budget: Budget, b: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # leave=False: under the CLI's per-batch bar, one line per batch would pile up.
    return tqdm(total=budget.max_samples, unit="sample", unit_scale=True, desc=f"SPEAR b={b}",
                leave=False)
