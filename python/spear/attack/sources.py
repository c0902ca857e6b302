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
- :class:`~spear.attack.neighbours.Neighbours`: on the zero rows of each selected
  direction, the column of an input that looks like its input (``neighbours.py``); it
  follows the others (works on what they found).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from .budget import Budget
from .kernel import SAMPLER_REACH, expected_samples, sample_directions, sampler_device
from .tolerance import NO_RELATIVE_TOL

#: The sampler's first chunk of samples, doubling per turn up to the largest.
FIRST_CHUNK, MAX_CHUNK = 1 << 14, 1 << 22
#: Rounds of each basis in a row with nothing new after which the dictionary gives up:
#: alone, and in "auto" (where the sampler may take over; trained MLP, b = 50: 44 of 50
#: columns after 4 rounds, the sampler out of reach, ... with patience 2).
DICTIONARY_PATIENCE, AUTO_DICTIONARY_PATIENCE = 3, 2
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
    has nothing more to offer (the search ends when every source is exhausted). A source
    that only works on the others' results sets ``follows = True``: its ``exhausted``
    then means "nothing to do at its last turn", and it keeps its turns while another
    source is active (:func:`search._active`)."""

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
        if sampler_out_of_reach(problem, known):
            # b = 50 on a trained MLP: ~5e11 samples; its turns would only take time from
            # the sources that can still find the batch.
            self.exhausted = True
            return Proposal(np.empty((0, problem.b)))
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


def sampler_out_of_reach(problem, known) -> bool:
    """Whether the columns found so far (their fraction of zero rows) put the batch
    beyond SAMPLER_REACH samples."""
    if len(known) < 2:
        return False
    P = problem.to_search(np.asarray(known))
    zeros = np.abs(problem.search @ P.T) <= problem.tolerances.thresh_pool[:, None]
    rho = float(np.median(zeros.mean(axis=0)))
    return expected_samples(problem.b, rho) > SAMPLER_REACH


@dataclass
class Dictionary:
    """Sparse dictionary recovery: a broad first round (8 b starts), then rounds steered
    away from the selected directions (4 b starts), cycling through the search bases in
    the order ``dictionary.bases_for`` reads off the spectrum (rows at unit length, as
    they are, divided by their noise) unless ``bases`` is given. Runs on the live rows of
    gW V_b with the pool's noise rule. Exhausted once ``patience`` rounds of each basis in
    a row added nothing, unless the sampler cannot reach the batch (``endless``)."""

    name: str = "dictionary"
    exhausted: bool = False
    patience: int = 1
    rounds: int = 0
    #: Fraction of the time left that one round may take (the sources after it get the
    #: rest): on trained networks a round can take minutes (a 60 s budget went to two
    #: rounds and no sample).
    time_share: float = 1.0
    bases: tuple | None = None
    idle: int = 0                      # rounds in a row that added nothing
    endless: bool = False              # the sampler cannot reach the batch: never give up
    #: Array module of the rounds; None: the problem's (CuPy when it lives on a GPU, where
    #: the b x m products of b >= 100 are matrix work).
    xp: object = None

    def propose(self, problem, known, budget: Budget, seed: int) -> Proposal:
        from .dictionary import dictionary_proposals

        if self.bases is None:
            self.bases = self.default_bases(problem)
        tol = problem.tolerances
        # M = A * sigma: the zero rule |M_k p| <= K sigma_k for unit p, as in the pool.
        basis = self.bases[self.rounds % len(self.bases)]
        noise = problem.noise_live if basis != "whitened" else np.ones(len(problem.noise_live))
        q = dictionary_proposals(problem.search * noise[:, None], thresh=tol.thresh_pool * noise,
                                 min_zeros=tol.min_zeros, seed=seed + self.rounds,
                                 known=problem.to_search(known) if len(known) else None,
                                 xp=problem.xp if self.xp is None else self.xp,
                                 budget=budget.share(self.time_share),
                                 **self.round_options(problem.b, len(known)),
                                 basis="plain" if basis == "whitened" else basis,
                                 unit_norms=self._unit_norms(problem))
        self.rounds += 1
        # Nothing else can find this batch: keep going while the budget lasts.
        self.endless = sampler_out_of_reach(problem, known)
        return Proposal(problem.to_factor(q) if len(q) else np.asarray(q))

    @staticmethod
    def default_bases(problem) -> tuple[str, ...]:
        from .dictionary import bases_for

        return bases_for(problem.spectrum, problem.b)

    @staticmethod
    def _unit_norms(problem):
        """"unit" rows of L at random init (digits, b = 12: 12 of 12 columns in the first
        round, 10 with unit rows of M = L S^1/2), of M on trained networks (MNIST MLP,
        b = 50: certified in 6 s with M's, incomplete in 60 s with L's)."""
        from .dictionary import trained_spectrum

        if trained_spectrum(problem.spectrum, problem.b):
            return None
        return np.linalg.norm(problem.L_live, axis=1)

    def round_options(self, b: int, known: int) -> dict:
        """Tuning of one round (``dictionary_proposals`` keywords): 8 b starts in the
        first, 4 b in steered ones."""
        return {"num_starts": None if not known else 4 * b}

    def observe(self, added: int) -> None:
        # Each basis finds columns the other misses: give up only after a round of each
        # in a row adds nothing.
        self.idle = 0 if added else self.idle + 1
        self.exhausted = not self.endless and self.idle >= self.patience * len(self.bases or ())


#: Names accepted by ``reconstruct(method=...)``.
METHODS = ("sample", "dictionary", "screened", "auto")


def sources_for(method: str | Sequence[DirectionSource], b: int | None = None) -> list[DirectionSource]:
    """``method`` as an ordered list of fresh sources. "auto": the dictionary first (it
    hands over once a round finds nothing new), the neighbour search of what it selected,
    the sampler for whatever is missing; from
    b = AUTO_SCREENED_FROM (b None: unknown yet) the screened rounds alone, which keep
    going like "dictionary" (the sampler cannot help there). "dictionary" and "screened"
    alone keep going for DICTIONARY_PATIENCE rounds of nothing new."""
    if isinstance(method, str):
        if method == "sample":
            return [Sampler()]
        if method == "dictionary":
            return [Dictionary(patience=DICTIONARY_PATIENCE)]
        from .neighbours import Neighbours  # these import sources.py: imported late
        from .screened import Screened

        if method == "screened":
            return [Screened(patience=DICTIONARY_PATIENCE)]
        if method == "auto":
            if b is not None and b >= AUTO_SCREENED_FROM:
                # No sampler turns between the rounds: at b >= 100 it needs ~2^(b-1)
                # samples per direction (b = 128: 45 of 148 s went to it, for nothing).
                return [Screened(patience=DICTIONARY_PATIENCE)]
            return [Dictionary(patience=AUTO_DICTIONARY_PATIENCE, time_share=AUTO_DICTIONARY_SHARE),
                    Neighbours(), Sampler()]
        raise ValueError(f"method must be one of {METHODS} or a list of direction sources, "
                         f"got {method!r}")
    sources = list(method)
    if not sources or not all(isinstance(s, DirectionSource) for s in sources):
        raise ValueError("method must name a method or be a non-empty list of direction sources "
                         "(objects with name, exhausted, propose and observe)")
    return sources
