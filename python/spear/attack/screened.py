"""Screened dictionary rounds: most of the dictionary from one batched pass, for b > 100.

Why not a joint method over the orthogonal group
------------------------------------------------
dZ = L Q with half of dZ's entries zero is complete dictionary learning, and the
literature's joint methods (l4-norm maximisation over the orthogonal group, Zhai et al.
2020; FastICA-style symmetric l1 minimisation) recover an *orthogonal* dictionary after
whitening. Ours is not one: inputs of the same class share their upstream gradient, so
the columns of dZ are correlated and the true dictionary in whitened coordinates has
singular values 0.6 to 2.6 (b = 128, m = 2000). l4 maximisation then finds spikier
orthogonal frames than the truth (l4 objective 0.52 vs 0.35 for the true columns) and
recovers 0 of 128 columns (median |cos| 0.30, random level); at b = 64 it gets 47 of 64
to |cos| > 0.9 (``bench/large/proto_l4.py``, numbers in ``bench/results/README.md``).

What wins instead
-----------------
The per-direction pipeline of :mod:`dictionary` (ADM from many rows, IRLS towards l0,
rounding) finds the columns, but spends 80% of a round in IRLS on ~7 b ADM results
(b^2 m each per step), most of them unconverged starts or repeats. Refining only the
sparsest ~b distinct ADM results (l1 ranking, ``max_refine``) keeps every column the full
round finds (b = 128, m = 2000: 100 of 128 either way) at a quarter of the time; the time
saved pays for 16 b starts instead of 8 b (113 of 128 in the first round), and the
steered rounds that follow refine about twice the number of missing columns. The array
work is ``dictionary_proposals``' (numpy or CuPy through ``xp``).

What made it several times faster (session of 2026-11-23, b = 128, m = 2000 and b = 256,
m = 4000, one core; each constant below carries its measurement)
-----------------------------------------------------------------------------------
- First-round ADM in float32, in place, with a large threshold first (lam = 2, 1, 0.5,
  0.25): starts fall into a column's basin in tens of steps instead of hundreds. b = 256:
  227 of 256 columns in the first round, where the default continuation reached 58.
- Steered rounds: 2 b starts from the rows aligned with what the selection leaves open,
  ADM at lam = 1 down to 0.1, each start with the known columns projected out (a raw row
  starts in the basin of a column that dominates it, mostly a found one; projected, one
  round found all 29 columns b = 256's first round missed).
- Trimmed least squares instead of IRLS for the ADM results (5 Grams per start, not 12).
- Weighted Gram matrices as a loop of matrix products (4x the broadcast product).
- The constrained deflation only when at most 8 columns are missing, with a slower delta
  schedule: it then finds them all in one round; with more it finds none.
- Bases "unit" and "plain" only at random init ("whitened" rounds found nothing).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dictionary import CONSTRAINED_MAX_MISSING, bases_for, trained_spectrum
from .sources import Dictionary

#: ADM results refined per column in the first round (sparsest first): b = 128, m = 2000,
#: refining b, 1.5 b or 2 b of them gave the same 100 columns as refining all ~900.
FIRST_REFINE_PER_COLUMN = 1.0
#: ...and per missing column in a steered round (chosen, not tuned: a steered round's
#: time goes mostly to the constrained IRLS inside dictionary_proposals).
STEERED_REFINE_PER_MISSING = 2.0
#: Fewest ADM results refined in any round.
MIN_REFINE = 16
#: First-round ADM starts per column (capped at the live rows): coverage is a coupon
#: collector, b = 128, m = 2000: 97 columns reached from 8 b starts, 112 from all 2000 rows.
FIRST_STARTS_PER_COLUMN = 16
#: ADM stages at lam = 2, 1, 0.5, 0.25 (/ sqrt(m)), this many steps per column each (at
#: least 50): a large lam first thresholds all but a column's largest entries and moves
#: a start into its basin fast; the smaller ones remove the bias. Columns reached by 1024
#: starts, b = 256, m = 4000: 131 after 4 x 100 steps (1, 1, 0.5, 0.25), 144 after
#: 100 / 100 / 50 / 50 steps (2, 1, 0.5, 0.25), 63 after 500 steps at 0.5 and 0.25 (the
#: default continuation); 2048 starts: 187 (4 x 50: 121). b = 128, m = 2000, 2000 starts:
#: 122 of 128 after 4 x 50 steps in 5.5 s, 112 after 100 + 100 at 0.5 and 0.25 in 5.8 s.
ADM_LAMBDAS = (2.0, 1.0, 0.5, 0.25)
ADM_STEPS_PER_COLUMN = 0.4
#: Steered rounds: 2 b starts, all from the rows aligned with what the selection leaves
#: open, stages at lam = 1, 0.5, 0.25, 0.1 (0.1: columns the first round missed are often
#: fixed points only there). b = 128, m = 2000, the 15 columns a first round missed, two
#: rounds: 8 found in 2.1 s; 4 b starts half aligned at 0.5, 0.25, 0.1 (the dictionary's
#: steered rounds): 5 in 7.8 s; 2 b aligned at those: 4 in 2.7 s; starting at 2: 1 in 6 rounds.
STEERED_LAMBDAS = (1.0, 0.5, 0.25, 0.1)
STEERED_STARTS_PER_COLUMN = 2
#: ... and each start with the known columns projected out (whitened coordinates): a raw
#: row starts mostly inside the basins of the columns that dominate it, which are the
#: ones already found. b = 256, m = 4000, the 29 columns the first round missed (no ADM
#: result of it came within cos 0.7 of any): one steered round found all 29 in 17 s;
#: without the projection +10, +2, +1, +1 in 4 rounds and then nothing.
STEERED_PROJECTION = True
#: A round stops at this share of the time left, so that the pool can still take its
#: proposals: all-positive b = 128, m = 4000 under load (5 on 2 cores), the first round
#: took 278 of 300 s and the pool, out of time, took none of its 112 exact proposals.
SCREENED_TIME_SHARE = 0.8


def adm_schedule(b: int, steered: bool = False) -> tuple:
    """The screened rounds' ADM stages ((steps, lam * sqrt(m)), ...)."""
    steps = max(50, int(np.ceil(ADM_STEPS_PER_COLUMN * b)))
    return tuple((steps, lam) for lam in (STEERED_LAMBDAS if steered else ADM_LAMBDAS))


def refine_count(b: int, missing: int | None) -> int:
    """How many ADM results a round refines: ~b in the first round (missing None), about
    twice the missing columns in a steered one."""
    if missing is None:
        return max(MIN_REFINE, int(np.ceil(FIRST_REFINE_PER_COLUMN * b)))
    return max(MIN_REFINE, int(np.ceil(STEERED_REFINE_PER_MISSING * missing)))


@dataclass
class Screened(Dictionary):
    """Dictionary rounds that refine only the sparsest ADM results (see the module
    docstring): the first round proposes most of a large batch's columns at once, steered
    rounds (starts aligned with what the selection leaves open) the rest. Bases, noise
    rule and patience as :class:`~spear.attack.sources.Dictionary`."""

    name: str = "screened"
    time_share: float = SCREENED_TIME_SHARE

    @staticmethod
    def default_bases(problem) -> tuple[str, ...]:
        """Unit and plain rows at random init: the "whitened" rounds found nothing there
        (b = 128, m = 2000, two batches: 0 new columns in each of their 4 rounds, 10 s
        each); all three on trained spectra."""
        if trained_spectrum(problem.spectrum, problem.b):
            return bases_for(problem.spectrum, problem.b)
        return ("unit", "plain")

    def round_options(self, b: int, known: int) -> dict:
        missing = None if not known else max(b - known, 1)
        return {"num_starts": (STEERED_STARTS_PER_COLUMN if known else FIRST_STARTS_PER_COLUMN) * b,
                "max_refine": refine_count(b, missing), "adm_dtype": np.float32,
                "adm_schedule": adm_schedule(b, steered=bool(known)), "aligned_share": 1.0,
                "project_starts": STEERED_PROJECTION and bool(known),
                "refine": "trimmed", "max_constrained": CONSTRAINED_MAX_MISSING}
