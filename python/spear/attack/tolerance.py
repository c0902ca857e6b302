"""The one tolerance policy: every threshold the attack uses, derived in one place.

Each constant carries the measurement that set it. Three kinds of error decide them:

- **rounding** of the gradient's dtype, relative to each row of L (``noise_rel``: what
  lies beyond the b-th singular value, over the b-th);
- **additive noise** (DP-SGD, FedAvg drift), the same on every row: an absolute floor in
  standard deviations ``sigma`` of the noise in L q (:func:`decompose.noise_scale`);
- **chance**: how often a wrong proposal looks right (Poisson tails of chance zeros).

:func:`policy_for` turns a factorization's noise estimates into a :class:`Tolerances`
that the prepared problem carries; the sampler, the pool, the dictionary source, the
selection and the certificate all read their thresholds from it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------- rank and noise
#: The batch size is where the singular values fall to the level of the rest of the
#: spectrum: level = max(RANK_MEDIAN_FACTOR * median(s), RANK_ROUNDING_FACTOR * eps(dtype)
#: * ||gW||_F), and the evident rank counts the values above RANK_GAP * level.
#: Measured on exact float32 gradients (MNIST inputs, m = 100..2000, n = 784, b = 10..100,
#: random init and trained 784-1000-1000-10 / 784-200x5-10 MLPs): the first rounding value
#: s_{b+1} sits at 0.11-0.14 eps ||gW||_F, and s_{b+1} / level stays within 0.7-4.3 on all
#: 36 trained-network fixtures; the rank is right on every fixture whose weakest input
#: stands above the rounding (24 of 24). The median term follows additive (DP) noise.
#: The former floor, 100 eps s_1 sqrt(max(m, n)), was 3e3-4e3x the real rounding level and
#: called a trained network's rank-20 gradient rank 11.
RANK_MEDIAN_FACTOR, RANK_ROUNDING_FACTOR, RANK_GAP = 4.0, 0.05, 30.0
#: ... and the cut must be a step: s_r / s_{r+1} at least this, else there is no gap.
RANK_MIN_STEP = 3.0
#: A direction whose singular value is within this factor of that level is weak: its
#: input comes back less accurately (float32, trained MLP: relative error 1.7e-3 at 120x
#: the first rounding value, 8.3e-4 at 1600x, below 1e-4 past 3000x).
WEAK_FACTOR = 1e3

# ----------------------------------------------------------------------- zero tests
#: The search runs on the whitened factor A = M / sigma (M = U_b S_b, the live rows of
#: gW V_b; sigma_k: row k's noise, see SIGMA_FLOOR_REL): for a unit direction p, every
#: entry of A p carries noise of std 1, whatever the input's scale, so a zero test is a
#: constant. Measured on trained-MLP fixtures (MNIST, float32): the true zero rows of
#: A p reach 3-6 at their 99% quantile and 7.3 at most; non-zero rows are 16 or more for
#: every input whose snr exceeds 1e3. The pool and polish judge at POOL_SIGMAS; the
#: sampler, whose null vectors of b-1 rows amplify the noise by the submatrix's
#: condition number, at SAMPLER_SIGMAS (a badly conditioned sample is rejected, which
#: only costs samples).
SAMPLER_SIGMAS, POOL_SIGMAS = 100.0, 8.0
#: Under additive noise (DP-SGD) rows have a low signal-to-noise ratio, and 100 sigmas
#: would call most rows of a wrong proposal zero (nothing passes the zero count): the
#: former floors, 10 and 3 sigmas, measured on MNIST under DP-SGD (true zero rows of
#: L q within 2.4 sigmas).
NOISY_SAMPLER_SIGMAS, NOISY_POOL_SIGMAS = 10.0, 3.0
#: The dictionary source searches M = A * sigma (the live rows of gW V_b, no row
#: scaling) and judges zeros by the same noise rule, |M_k p| <= POOL_SIGMAS sigma_k for a
#: unit p; its proposals need the sampler's zero count (``Tolerances.min_zeros``).
#: The kernel's relative tolerance |L_r q| <= tol * ||L_r|| when a caller gives none.
DEFAULT_TOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 1e-4}
#: A relative tolerance that no row reaches: thresholds are then the absolute floor alone.
NO_RELATIVE_TOL = 1e-300
#: Chance per sample that a wrong proposal passes the zero-count test: exact gradients,
#: and under noise (where a true column's zeros blur into chance zeros: accept more, the
#: pool polishes and ranks them, rather than none).
EXACT_TAIL, NOISY_TAIL = 1e-12, 1e-4

# ----------------------------------------------------------------------- directions
#: |cos| above 1 - DUPLICATE_COS_GAP counts as the same direction (pool and dictionary).
DUPLICATE_COS_GAP = 1e-6
DUPLICATE_COS = 1 - DUPLICATE_COS_GAP
#: Dictionary ADM starts that end within this |cos| of each other are one start.
MERGE_COS = 0.99
#: Only candidates with at least this fraction of the zeros of the sparsest one are
#: selected: the columns of one batch are about equally sparse (within-batch ratio of
#: the fewest to the most zeros 0.73-0.86 on trained-MLP fixtures), while junk proposals
#: with b + 2 zeros would fill the last slots and switch the dictionary's steering off
#: (untrained width-200 MLP, b = 20: failing in 63 s without the rule, 0.9 s with it).
ELIGIBLE_ZERO_FRACTION = 0.5
#: ... but when those give fewer than b independent directions, any candidate with at
#: least ELIGIBLE_FALLBACK_FACTOR times the zero count a wrong proposal reaches by chance
#: (``Tolerances.min_zeros``) fills the rest. TinyImageNet MLPs (width 1000) trained 3
#: epochs: b = 8 had a column with 397 zeros beside 921 (ratio 0.43) and stayed 7 of 8 in
#: 1e7 samples; b = 20 one with 267 beside 951 (0.28). Junk sits at about min_zeros.
ELIGIBLE_FALLBACK_FACTOR = 3.0
#: A candidate is independent of the chosen ones when its residual norm exceeds this.
INDEPENDENCE_TOL = 1e-4
#: Under noise two polishes of one column differ by ~noise in angle and are not
#: independent: the tolerance becomes NOISY_INDEPENDENCE_FACTOR * noise_rel, at most
#: NOISY_INDEPENDENCE_MAX.
NOISY_INDEPENDENCE_FACTOR, NOISY_INDEPENDENCE_MAX = 3.0, 0.2
#: Dictionary rounding: the zero rows of a near-solution end at the first jump of more
#: than this factor in its sorted residuals (near-solutions are ~1e-7 on their zero rows
#: and ~1e-3 elsewhere; float64 tolerances can be 1e-11, so no fixed cut works).
ZERO_GAP_RATIO = 10.0
#: Dictionary steering: known directions with fewer zeros than this fraction of the
#: typical one are mixtures (25-70% fewer zeros) and are not steered away from.
CREDIBLE_ZERO_RATIO = 0.85
#: Dictionary steering: singular values of the known directions below this fraction of
#: the largest leave a complement to search.
COMPLEMENT_REL = 1e-6
#: Mixture splitting: a singular value of the zero rows below MIXTURE_LEVEL * tol *
#: sqrt(rows) spans the null space of a mixture.
MIXTURE_LEVEL = 10.0

# ----------------------------------------------------------------------- certificate
#: The noise model of the certificate: what rank b leaves of row k of gW, r_k, is that
#: row's noise (rounding, or DP noise), std sigma_k = r_k / sqrt(n - b) per entry; an
#: entry of dZ' = L Q (column i) carries noise sigma_k ||S^-1/2 q_i||. Scale-invariant:
#: a weak input's column is judged against its own noise, not the strong inputs'.
#: Rows with almost nothing left over are floored at this fraction of the median sigma.
SIGMA_FLOOR_REL = 1e-3
#: ... and at the rounding of the float64 factorization, which lies inside the span and
#: so escapes the residual: SVD_NOISE_FACTOR eps64 s_1 / sqrt(n) (float64 gradients of
#: random-init MLPs: the true batch showed sign violations below 10, none from 10 on).
SVD_NOISE_FACTOR = 10.0
#: ... and at the rounding of the gradient's own entries: ROUNDING_ROW_FACTOR eps(dtype)
#: ||gW_k|| / sqrt(n) per row.
ROUNDING_ROW_FACTOR = 0.5
#: The exact check judges an entry of dZ' only past CERT_SIGMAS of its noise, and calls
#: Z' negative below -CERT_Z_SIGMAS times its error margin. Measured on 18 trained-MLP
#: fixtures (MNIST, float32 gradients; true sets rebuilt from the true zero sets): at 25
#: sigmas 0 violations on every batch whose inputs all stand above the rounding (12 of
#: 12; at 8 sigmas 2-75), wrong sets (one column replaced by the sum of two) 53-455.
CERT_SIGMAS, CERT_Z_SIGMAS = 25.0, 8.0
#: ... and only past CERT_ROUNDING eps ||gW_k|| ||X'^+ e_i||, the rounding of the client's
#: gW (eps of its dtype) as it reaches entry (k, i) of dZ' at worst (Cauchy-Schwarz): that
#: rounding correlates with the inputs, so its part inside their span outgrows the
#: isotropic model with n. Measured at the true zeros of dZ, b = 20, width 200, float32
#: (bench/rounding_in_span.py): ImageNet 224 px, 2 batches: up to 21 sigmas, 0.027 of
#: this level; 720 px: 48-77 sigmas (the true batch failed the exact check with 49-65
#: "violations"), 0.020 of it; the non-zero entries at least 120 times it. At small n the
#: sigmas decide: MNIST (n = 784) up to 9.6 sigmas = 0.19 of this level, digits 3.2 = 0.20.
CERT_ROUNDING = 0.2
#: An input's expected relative error is ERROR_PER_SNR / snr_i, snr_i = ||dZ'_i|| /
#: (||sigma|| ||S^-1/2 q_i||) (630 inputs of the same fixtures: median err * snr 1.2-2.8).
ERROR_PER_SNR = 2.0
#: An input of a certified set is itself "certified" only when its expected error is at
#: most this; a weaker one is "consistent": the set is proven, but float rounding leaves
#: that input imprecise (ADULT, MLP after 1 epoch, b = 8: one input at 32x the rounding
#: level, predicted 1.5e-2, measured 2.7e-2; the other seven within 4e-7).
PRECISE_INPUT_ERROR = 1e-3
#: Only a gradient whose noise is rounding can be certified: s_{b+1} at most this many
#: eps(float32) ||gW||_F (float32 rounding puts it at 0.11-0.14; DP noise at sigma = 1e-5
#: on MNIST lies 10-100x above the bound). Float32 rounding, not the dtype's: gradients
#: computed in float32 and handed over as float64 are still exact to float32.
EXACT_TAIL_FACTOR = 30.0
#: The graded check judges the same entries (at 3 sigmas the true batch of a trained MLP
#: scores a violation rate of 0.11-0.15: rounding is not Gaussian in every row).
GRADED_SIGMAS = CERT_SIGMAS
#: Largest per-column violation rate of a set still called consistent (graded verdict).
#: Measured on TinyImageNet, b = 20: the true batch under FedAvg (E = 5, b/4, lr 0.01;
#: the update is judged with the server's pre-training weights) reaches 0.049 (0.076
#: before GRADED_MARGIN below), a set with one column replaced by a mixture of two
#: 0.25 to 0.39.
MAX_VIOLATION_RATE = 0.15
#: ... and no column may stand out: drift and noise spread violations over all columns,
#: a wrong column stands alone (deeper layers, b = 10: one wrong column at 0.06 beside
#: nine at 0). The worst column may exceed the median one by this factor, plus a floor.
OUTLIER_FACTOR, RATE_FLOOR = 5.0, 0.005
#: Graded check: a pre-activation counts as negative below this fraction of its row's
#: median |Z'| over the batch.
GRADED_MARGIN = 0.1
#: A column with fewer judged entries says nothing, and a set with such a column is not
#: consistent: a wrong column (violation rate ~0.5) shows at least 2 violations in 10
#: judged entries with probability 0.99. (verify on 15 of 16 inputs judged none: the
#: 16th input's share of gW reads as noise and swamps every entry.)
MIN_JUDGED_PER_COLUMN = 10
#: ``verify``: the candidate batch must explain gW to within VERIFY_FIT_FACTOR * noise_rel
#: (relative), and gb to within 10 times that.
VERIFY_FIT_FACTOR, VERIFY_BIAS_FACTOR = 1e3, 10.0


@dataclass(frozen=True)
class Tolerances:
    """Every threshold of one prepared problem, in noise sigmas of the whitened factor A
    (sampler, pool, dictionary)."""

    noise_rel: float          # relative noise of L: s_{b+1} / s_b
    sigma: float              # std of additive noise in L q for a unit q (0: exact)
    thresh: np.ndarray        # (rows,) sampler thresholds on A
    thresh_pool: np.ndarray   # (rows,) pool thresholds on A
    sampler_sigmas: float     # the sampler's threshold on A (every row)
    noisy: bool               # the noise beyond rank b is additive, not rounding
    min_zeros: int            # fewest zero rows of an accepted proposal (on A)
    independence: float       # residual norm above which a direction is independent

    def as_stats(self) -> dict:
        return {"noise_level": self.noise_rel, "noise_floor": self.sigma, "noisy": self.noisy,
                "min_zeros": self.min_zeros, "sampler_sigmas": self.sampler_sigmas,
                "pool_sigmas": float(self.thresh_pool[0]) if len(self.thresh_pool) else None}


def policy_for(A: np.ndarray, noise_rel: float, sigma: float, exact: bool) -> Tolerances:
    """The thresholds for the whitened factor ``A`` (float64) of a factor whose relative noise is ``noise_rel`` (s_{b+1} / s_b) and additive noise in
    L q has std ``sigma``; ``exact``: that noise is rounding."""
    rows = A.shape[0]
    k_sampler, k_pool = ((SAMPLER_SIGMAS, POOL_SIGMAS) if exact
                         else (NOISY_SAMPLER_SIGMAS, NOISY_POOL_SIGMAS))
    thresh = np.full(rows, k_sampler)
    tail = EXACT_TAIL if exact else NOISY_TAIL
    return Tolerances(
        noise_rel=noise_rel, sigma=sigma, thresh=thresh, thresh_pool=np.full(rows, k_pool),
        sampler_sigmas=k_sampler,
        noisy=not exact, min_zeros=min_zeros_for(A, thresh, tail=tail),
        independence=max(INDEPENDENCE_TOL, min(NOISY_INDEPENDENCE_MAX,
                                               NOISY_INDEPENDENCE_FACTOR * noise_rel)))


def rank_level(spectrum: np.ndarray, dtype) -> float:
    """The level of the spectrum that no input reaches: rounding of ``dtype`` over the
    whole matrix, or the bulk of additive noise (read off the median singular value)."""
    s = np.asarray(spectrum, dtype=np.float64)
    eps = float(np.finfo(dtype).eps)
    return max(RANK_MEDIAN_FACTOR * float(np.median(s)),
               RANK_ROUNDING_FACTOR * eps * float(np.sqrt(np.sum(s * s))))


def row_noise(xp, residual_rows, live, n: int, b: int, top: float, row_norms=None, eps: float = 0.0):
    """Noise std of the entries of each row of gW from the row norms of what rank b leaves
    (gW - L R), floored at SIGMA_FLOOR_REL of the median live row (rows with few non-zero
    entries would otherwise get absurd weights) and at the float64 rounding of the
    factorization itself (``top``: s_1), which the residual does not see; 0 on dead rows."""
    sigma = residual_rows / np.sqrt(max(n - b, 1))
    floor = SIGMA_FLOOR_REL * float(xp.median(sigma[live])) if bool(live.any()) else 0.0
    floor = max(floor, SVD_NOISE_FACTOR * float(np.finfo(np.float64).eps) * top / np.sqrt(n))
    if row_norms is not None:
        # The rounding of each stored entry, which lies partly inside the span (digits:
        # 17 of 64 input pixels always zero) and so escapes the residual.
        sigma = xp.maximum(sigma, ROUNDING_ROW_FACTOR * eps * row_norms / np.sqrt(n))
    return xp.where(live, xp.maximum(sigma, floor), 0.0)


def is_exact(spectrum: np.ndarray, b: int, fro: float) -> bool:
    """Whether what rank b leaves of gW (``fro``: ||gW||_F) is rounding, so that a set
    can be certified, rather than additive noise (DP), where at best it is consistent."""
    tail = float(spectrum[b]) if len(spectrum) > b else 0.0
    return tail <= EXACT_TAIL_FACTOR * float(np.finfo(np.float32).eps) * float(fro)


# ----------------------------------------------------------------------- chance zeros

def row_thresholds(L: np.ndarray, tol: float, floor: float = 0.0) -> np.ndarray:
    """max(tol * ||L_r||, floor) per row, in L's dtype (computed on the host so every
    backend agrees). ``tol`` covers rounding, which is relative to the row; ``floor``
    covers additive noise (DP, FedAvg), which is the same on every row."""
    return np.maximum(tol * _row_norms(L), floor).astype(L.dtype)


def default_min_zeros(m: int, b: int, tol: float) -> int:
    """Fewest zero rows that a random proposal essentially never reaches.

    A wrong proposal is zero on its b-1 sampled rows only; any other row falls under
    ``tol`` by chance with probability about tol * sqrt(2b/pi) (the density of a random
    unit vector's coordinate at 0). We ask for enough extra zeros that a Poisson count
    with that rate exceeds them with probability below EXACT_TAIL per sample.
    """
    return _min_zeros(max(m - b + 1, 0) * _chance_zero(tol, b), m, b)


def min_zeros_for(L: np.ndarray, thresh: np.ndarray, tail: float = EXACT_TAIL) -> int:
    """:func:`default_min_zeros` for per-row thresholds (a noise floor makes the chance
    of a row passing larger on rows of small norm). ``tail``: chance per sample that a
    wrong proposal passes."""
    m, b = L.shape
    rel = np.asarray(thresh, dtype=np.float64) / np.maximum(_row_norms(L), 1e-300)
    lam = float(np.sum(np.minimum(1.0, 2.0 * rel * math.sqrt(2.0 * b / math.pi))))
    return _min_zeros(lam * max(m - b + 1, 0) / max(m, 1), m, b, tail)


def _chance_zero(tol: float, b: int) -> float:
    return min(1.0, 2.0 * tol * math.sqrt(2.0 * b / math.pi))


def _min_zeros(lam: float, m: int, b: int, tail: float = EXACT_TAIL) -> int:
    extra, term, left = 0, math.exp(-lam), 1.0
    while left > tail and extra < m:
        left -= term
        extra += 1
        term *= lam / extra
    return min(m, b - 1 + max(extra, 2))


def _row_norms(L: np.ndarray) -> np.ndarray:
    L64 = L.astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", L64, L64))
