"""Direction sources: where candidate columns of Q come from.

A source only proposes directions (unit q with L q sparse); the search loop
(:mod:`search`) owns the pool, the selection and the budget. Adding a source never
touches the loop: implement :class:`DirectionSource` and pass it in ``method=[...]``.

- :class:`Sampler`: random (b-1) x b submatrices through the compiled kernel (CPU or
  CUDA); about rho^-(b-1) samples, so it ends near b = 25.
- :class:`Dictionary`: sparse dictionary recovery from many starts (``dictionary.py``);
  polynomial in b, finds most columns of large batches in a few rounds.
- :class:`~spear.attack.screened.Screened`: the same rounds refining only the sparsest
  ADM results (``screened.py``): large batches (b > 100) at a fraction of the time.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .budget import Budget
from .kernel import sample_directions, sampler_device
from .screened import Screened
from .tolerance import NO_RELATIVE_TOL

#: The sampler's first chunk of samples, doubling per turn up to the largest.
FIRST_CHUNK, MAX_CHUNK = 1 << 14, 1 << 22
#: Rounds of nothing new after which the dictionary alone gives up.
DICTIONARY_PATIENCE = 3
#: In "auto", a dictionary round takes at most half the time left, the sampler the rest.
AUTO_DICTIONARY_SHARE = 0.5
#: In "auto", batches of at least this many inputs get the screened rounds instead of the
#: dictionary's. Measured (bench/results/README.md, issue 18): at b = 100 screened rounds
#: halve the time with zero-mean inputs (64 s vs 123 s) but found 96 of 100 all-positive
#: columns where the dictionary's found 100 (m = 4000, neither certified in 200 s), so b <= 100
#: keeps the dictionary; at b = 128 only the screened rounds finish.
AUTO_SCREENED_FROM = 101


@dataclass
class Proposal:
    """What one turn of a source produced: q (k x b unit rows in the coordinates of the
    factor L, host), zero counts when it has them (used only to rank a huge output), and
    ``stop`` when the budget this source draws on is spent."""

    q: np.ndarray
    zeros: np.ndarray | None = None
    stop: bool = False


@runtime_checkable
class DirectionSource(Protocol):
    """One source of candidate directions.

    ``propose`` gets the prepared problem, the directions currently selected (rows, may
    be empty: steer away from them if useful), the shared budget and the seed; it
    returns a :class:`Proposal`. ``observe`` then tells it how many new independent
    directions its proposal gave the selection. ``exhausted`` turns True when the source
    has nothing more to offer (the search ends when every source is exhausted)."""

    name: str
    exhausted: bool

    def propose(self, problem, known: np.ndarray, budget: Budget, seed: int) -> Proposal: ...

    def observe(self, added: int) -> None: ...


@dataclass
class Sampler:
    """The SPEAR sampler: chunks of samples from one Philox stream (sample i is the same
    submatrix on every backend), chunk size doubling, sized to the deadline."""

    name: str = "sample"
    exhausted: bool = False
    chunk: int = FIRST_CHUNK
    seconds: float = 0.0          # time spent in the kernel (sets the chunk size)

    def propose(self, problem, known, budget: Budget, seed: int) -> Proposal:
        left = budget.samples_left()
        if left == 0:
            return Proposal(np.empty((0, problem.b)), stop=True)
        todo = self.chunk if left is None else min(self.chunk, left)
        remaining = budget.remaining()
        if remaining is not None and budget.samples:
            # Size the chunk by the measured rate so the deadline is not overshot.
            rate = budget.samples / max(self.seconds, 1e-9)
            todo = int(max(1024, min(todo, rate * remaining)))
        tol = problem.tolerances
        t0 = budget.clock()
        # On the whitened factor every row's threshold is the same number of sigmas.
        d = sample_directions(problem.search, todo, seed=seed, tol=NO_RELATIVE_TOL,
                              floor=tol.sampler_sigmas, min_zeros=tol.min_zeros, offset=budget.samples,
                              device=sampler_device(problem.backend.name, problem.b))
        self.seconds += budget.clock() - t0
        budget.spend(todo)
        self.chunk = min(self.chunk * 2, MAX_CHUNK)
        to = problem.backend.to_numpy
        q = to(d.q)
        return Proposal(problem.to_factor(q) if len(q) else q, to(d.zeros))

    def observe(self, added: int) -> None:
        pass


@dataclass
class Dictionary:
    """Sparse dictionary recovery: a broad first round (8 b starts), then rounds steered
    away from the selected directions (4 b starts). Exhausted after a round that adds
    nothing, once ``patience`` rounds have run."""

    name: str = "dictionary"
    exhausted: bool = False
    patience: int = 1
    rounds: int = 0
    #: Fraction of the time left that one round may take (the sources after it get the
    #: rest): on trained networks a round can take minutes (a 60 s budget went to two
    #: rounds and no sample).
    time_share: float = 1.0
    xp: object = field(default=np)     # the rounds run on the host (CuPy: issue 17/18)

    def propose(self, problem, known, budget: Budget, seed: int) -> Proposal:
        from .dictionary import dictionary_proposals

        known = known if len(known) else None
        tol = problem.tolerances
        q = dictionary_proposals(problem.L_live, thresh=tol.dict_thresh, min_zeros=tol.dict_min_zeros,
                                 seed=seed + self.rounds, known=known, xp=self.xp,
                                 budget=budget.share(self.time_share),
                                 num_starts=None if known is None else 4 * problem.b)
        self.rounds += 1
        return Proposal(np.asarray(q))

    def observe(self, added: int) -> None:
        self.exhausted = added == 0 and self.rounds >= self.patience


#: Names accepted by ``reconstruct(method=...)``.
METHODS = ("sample", "dictionary", "screened", "auto")


def sources_for(method: str | Sequence[DirectionSource], b: int | None = None) -> list[DirectionSource]:
    """``method`` as an ordered list of fresh sources. "auto": the dictionary first (it
    hands over once a round finds nothing new), the sampler for whatever is missing; from
    b = AUTO_SCREENED_FROM (b None: unknown yet) the screened rounds alone, which keep
    going like "dictionary" (the sampler cannot help there). "dictionary" and "screened"
    alone keep going for DICTIONARY_PATIENCE rounds of nothing new."""
    if isinstance(method, str):
        if method == "sample":
            return [Sampler()]
        if method == "dictionary":
            return [Dictionary(patience=DICTIONARY_PATIENCE)]
        if method == "screened":
            return [Screened(patience=DICTIONARY_PATIENCE)]
        if method == "auto":
            if b is not None and b >= AUTO_SCREENED_FROM:
                # No sampler turns between the rounds: at b >= 100 it needs ~2^(b-1)
                # samples per direction (b = 128: 45 of 148 s went to it, for nothing).
                return [Screened(patience=DICTIONARY_PATIENCE)]
            return [Dictionary(patience=1, time_share=AUTO_DICTIONARY_SHARE), Sampler()]
        raise ValueError(f"method must be one of {METHODS} or a list of direction sources, "
                         f"got {method!r}")
    sources = list(method)
    if not sources or not all(isinstance(s, DirectionSource) for s in sources):
        raise ValueError("method must name a method or be a non-empty list of direction sources "
                         "(objects with name, exhausted, propose and observe)")
    return sources
