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
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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

    def round_options(self, b: int, known: int) -> dict:
        missing = None if not known else max(b - known, 1)
        return {"num_starts": FIRST_STARTS_PER_COLUMN * b if not known else 4 * b,
                "max_refine": refine_count(b, missing)}
