"""Candidate directions from sparse dictionary learning: a second source next to sampling.

Why
---
The sampler (``kernel.py``) needs a (b-1)-row submatrix of L whose rows all lie in the
zero set of one input: about rho^-(b-1) samples, hopeless beyond b ~ 25. But the columns
of dZ = L Q are also *the sparsest vectors in the column space of L* (about half of their
entries are zero, a generic vector of the space has none), so they can be found by
continuous optimisation of a sparsity surrogate from many starting points, at a cost
polynomial in b (the "sparsely-used dictionary learning" view of SPEAR++).

Method (each choice measured on exact torch gradients, b = 32..50, m = 1000; numbers in
the comments and in ``bench/bench_large_batch.py``)
----------------------------------------------------------------------------------
1. **Whiten.** Rows of L are scaled to unit norm (keeps every support, evens out the
   heavy-tailed row scales of dZ), or left as they are on trained networks (``basis``,
   :data:`BASES`), then ``Ln = U Ro`` (thin QR). Sparse vectors are ``U p``; the
   direction in L's coordinates is ``q = Ro^-1 p``. (The source passes L = gW V_b and
   thresholds in noise sigmas per row, so "L's coordinates" are the search's.)
2. **Starts from rows.** ``p = U_r`` has ``<U_r, p_i> ~ dZ[r, i]``: it points at the
   inputs active in row r. 8 b random rows (all-positive inputs need that many: with 4 b
   only half of the columns attract a start).
3. **Batched ADM** (Qu, Sun & Wright), all starts as one b x s matrix:
   ``X = soft(U P, lam)``, ``P = normalize(U^T X)``, lam = 0.25 / sqrt(m), 100 steps.
   lam = 0.5 (the prototype's) leaves some all-positive columns unstable even when started
   on them (19 of 32 attracted vs 32 of 32 at 0.25). The l4 power iteration
   ``P = normalize(U^T (U P)^3)`` stalls at |cos| ~ 0.95 and could not be rounded (0 of 32).
4. **IRLS towards l0** on the distinct ADM results: p <- smallest eigenvector of
   ``U^T diag(max(|U p|, delta)^-2) U`` (inverse iteration), delta halving over 12 steps.
   ADM's bias leaves 3-10% of the smallest rows wrong, which defeats rounding; l1 weights
   (power 1) reach 26 of 32 all-positive columns, l0-like weights (power 0) 32 of 32.
5. **Rounding to an exact direction**: null vector of the zero rows, chosen by the first
   large gap in the sorted |Ln q| (not the b-1 smallest rows: with correlated inputs
   those are often parallel and their null space is not one-dimensional; not a fixed
   tolerance: float64 tolerances are 1e-11). Batched via Gram matrices, then an SVD per
   surviving candidate, then the sparsity filter (``min_zeros`` under ``thresh``).
6. **Descend from mixtures.** An exact direction whose zero rows leave a d-dimensional
   null space (d >= 2) mixes d columns, each of which lies in that space; sampling
   (d-1)-row submatrices inside it is cheap. With all-positive inputs IRLS often lands on
   mixtures of two columns (their zero sets overlap by ~75%); splitting them took b = 50
   from 28 to 48 columns of 50.
7. **Deflation with ``known``** (directions already found, best: the caller's current
   independent selection): results that converge to known ones are dropped; half of the
   starts are the rows most aligned with the complement of span(known) (the dual of the
   missing columns); ADM continues at lam = 0.1, where columns unstable at 0.25 are fixed
   points; and IRLS under linear constraints that every known direction violates (ER-SpUD
   style) finds the last columns of zero-mean batches directly.

Every array operation goes through the ``xp`` handle (numpy or CuPy); only the small
per-candidate bookkeeping (de-duplication, mixture splitting) runs on the host.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import host
from .budget import Budget, expired
from .tolerance import (COMPLEMENT_REL, CREDIBLE_ZERO_RATIO, DUPLICATE_COS, INDEPENDENCE_TOL,
                        MERGE_COS, MIXTURE_LEVEL, ZERO_GAP_RATIO)


#: The search bases. "unit" rows even out the heavy-tailed row scales of dZ (random-init
#: networks); on trained networks a row's norm is set by the strong inputs active on it, so
#: a weak input's column has 60-160 entries below 1e-3 of its largest there (3-6 at init)
#: and ADM is not attracted to it: trained MLP on MNIST, b = 50, 400 starts: 13 true columns
#: reached in "unit" rows, 34 in "plain" ones (rows as they are, M = gW V_b); at init
#: "unit" reaches them all. (The source also runs "plain" on the rows divided by their
#: noise, "whitened".) Each finds columns the others miss, so the source cycles through
#: them: the same MLP, b = 50, two batches: 45 and 35 true columns with "plain" and "unit",
#: 50 and 46 with all three, in 5 and 19 s of one core.
BASES = ("unit", "plain")
#: Which basis goes first: "plain" when the inputs' singular values spread more than this
#: (s_1 / s_b). Measured, float32 first-layer gradients: random-init MLPs 2.9-100 (MNIST
#: fixtures and synthetic batches, b = 8..100), trained ones 390 to 7e7 (width 200 and
#: 1000, 0.1 to 3 epochs). Unit rows first at init: all-positive b = 8, width 200 takes 0
#: samples instead of 16k; plain first when trained: b = 50, 46 columns in 300 s instead of 25.
PLAIN_FIRST_SPREAD = 300.0
#: Constrained IRLS (deflation): delta shrinks by this factor per step, for this many
#: steps. Halving over 15 steps sent most starts to a mixture: b = 128, m = 2000, the 124
#: true columns known, 64 starts: 5 reached one of the 4 missing columns (2 of the 4
#: columns reached); at 0.7 over 20 steps 18 did (all 4), at 0.8 over 35 steps 24. But
#: 20 steps end at delta = 2e-5, too coarse to round a column with a non-zero entry at
#: 4e-6 (a second batch's last 2 columns: found at 0.5 x 15, missed at 0.7 x 20); 30 steps
#: end at 5e-7: one steered round found all the missing columns of both batches.
CONSTRAINED_DECAY, CONSTRAINED_STEPS = 0.7, 30
#: Steered rounds: the share of ADM starts taken from the rows most aligned with what the
#: known directions leave open (the rest are random rows; screened rounds use 1).
ALIGNED_START_FRACTION = 0.5
#: ...and it pays only when few columns are missing: the same batch with 15 missing (what a
#: first round left), 120 starts: none reached a missing column (11 s), where the steered
#: round's ADM stage found 4 in 3.3 s; with 4 missing 18 of 64 starts did. A random
#: constraint weighs every missing column alike, and with many the minimiser is a mixture.
CONSTRAINED_MAX_MISSING = 8
#: ADM may take this share of a round's time; beyond it the starts are cut to what a probe
#: of a few steps says fits (so the cut depends on the machine, and only binds when the
#: budget is tight). b = 512, m = 8000, one core, 600 s: 8192 starts x 820 steps needed
#: ~550 s of the round's 480, and the round ended with nothing proposed.
ADM_TIME_SHARE = 0.5
ADM_PROBE_STARTS, ADM_PROBE_STEPS = 256, 3
#: trimmed_refine: rows kept and rounds. First screened round, b = 128 (m = 2000) / 256
#: (m = 4000), the sparsest b ADM results: 123 / 227 true columns in 3.2 / 26 s (rounding
#: included), 12 IRLS steps 123 / 226 in 5.2 / 44 s; 3 rounds: 121 at b = 128.
TRIM_FRACTION, TRIM_ROUNDS = 0.3, 5


def trained_spectrum(spectrum, b: int) -> bool:
    """Whether the inputs' singular values spread like a trained network's (s_1 / s_b past
    PLAIN_FIRST_SPREAD)."""
    return float(spectrum[0]) / max(float(spectrum[b - 1]), 1e-300) > PLAIN_FIRST_SPREAD


def bases_for(spectrum, b: int) -> tuple[str, ...]:
    """The order in which a source cycles through the bases for this spectrum (the
    source's "whitened" is "plain" on noise-scaled rows)."""
    return (("plain", "unit", "whitened") if trained_spectrum(spectrum, b)
            else ("unit", "plain", "whitened"))


@dataclass
class _Whitened:
    """Rows of L scaled to unit norm (keeps every support, evens out the heavy-tailed row
    scales of dZ), Ln = U Ro (thin QR); sparse vectors are U p, q = Ro^-1 p."""

    Ln: object          # (m, b) unit rows
    tr: object          # (m,) relative tolerance per row
    U: object           # (m, b) orthonormal
    Ro: object          # (b, b)


def dictionary_proposals(L, *, thresh, min_zeros: int, seed: int = 0,
                         num_starts: int | None = None, known=None, xp=np,
                         budget: Budget | None = None, adm_iters: int = 100,
                         irls_iters: int = 12, descend: bool = True, adm_lam: float | None = None,
                         max_refine: int | None = None, basis: str = "unit",
                         unit_norms=None, adm_dtype=np.float64,
                         max_constrained: int | None = None,
                         adm_schedule: tuple | None = None, refine: str = "irls",
                         aligned_share: float = ALIGNED_START_FRACTION,
                         project_starts: bool = False) -> np.ndarray:
    """Sparse directions of L by batched sparsity minimisation from many starts.

    L: (m, b) float64 factor with all-zero rows already removed (numpy, or CuPy when xp is
       cupy).
    thresh: (m,) per-row zero thresholds (tol * ||L_r||): row r counts as zero for q when
       |L_r q| <= thresh[r].
    min_zeros: only return directions with at least this many zero rows.
    seed: start selection and splitting samples (same seed, same result).
    num_starts: ADM starts (default 8 b, at most m).
    known: (k, b) unit directions already found (rows); steers new starts away from them
       (deflation, see the module docstring). Best: the caller's current independent
       selection (fewer than b directions, or the certified part of a failed set), so that
       their span leaves a complement; a set spanning everything only drops repeats.
    xp: numpy or cupy.
    budget: once it has expired, ADM, IRLS and mixture splitting stop early (what is exact
       is returned).
    adm_iters, irls_iters, adm_lam, max_refine, descend: tuning (ADM steps, IRLS steps,
       ADM threshold times sqrt(m), most ADM results refined, split mixtures).
    basis: "unit" scales every row of L to unit norm before the search, "plain" keeps
       their lengths (see :data:`BASES`). Zero tests read ``thresh`` either way.
    unit_norms: (m,) the row norms "unit" divides by instead of L's own (those of another
       factor of the same span: the source passes L's for M = L S^1/2 at random init).
    adm_dtype: the ADM stage's precision (float32: three times the matmul rate; IRLS and
       rounding stay in float64 and set the accuracy).
    adm_schedule: ((steps, lam * sqrt(m)), ...) stages of ADM replacing the default
       continuation (see screened.py).
    aligned_share: steered rounds: the share of starts taken from the rows most aligned
       with what the known directions leave open (the rest are random rows).
    project_starts: steered rounds: remove the known directions from every start
       (whitened coordinates) before ADM, so that no start begins inside a known column's
       basin (see STEERED_PROJECTION in screened.py).
    refine: how ADM results are brought close enough to round: "irls" (``irls_iters``
       steps of IRLS) or "trimmed" (:func:`trimmed_refine`, cheaper, for screened rounds).
    max_constrained: skip the constrained IRLS when the known directions leave more than
       this many dimensions open (None: never skip; see CONSTRAINED_MAX_MISSING).

    Returns a numpy (c, b) array of unit vectors q (rows, in L's coordinates, i.e. L q
    sparse), made exact (null space of their zero rows) and filtered (at least
    ``min_zeros`` zero rows, and at least half as many as the sparsest one found); mostly
    true columns of Q, some mixtures of columns (fewer zeros: a sparsest-first selection
    ranks them last); de-duplicated within one call, not against ``known``.
    """
    L = xp.asarray(L, dtype=xp.float64)
    b = int(L.shape[1])
    if b == 1:
        return np.ones((1, 1))
    rng = np.random.default_rng(seed)
    wh = _whiten(xp, L, xp.asarray(thresh, dtype=xp.float64), basis, unit_norms)
    known_q = None
    if known is not None and len(known):
        known_q = xp.asarray(known, dtype=xp.float64).reshape(-1, b)
        known_q = known_q / xp.linalg.norm(known_q, axis=1, keepdims=True)
    P, comp = _adm_stage(xp, wh, known_q, rng, num_starts, adm_iters, adm_lam, max_refine, budget,
                         adm_dtype, adm_schedule, aligned_share, project_starts)
    if P.shape[1]:
        P = irls(xp, wh.U, P, irls_iters, budget=budget) if refine == "irls" else \
            trimmed_refine(xp, wh, P, budget=budget)
    if comp is not None and (max_constrained is None or comp.shape[1] <= max_constrained):
        P = xp.concatenate([_constrained_stage(xp, wh, comp, rng, budget), P], axis=1)
    if P.shape[1] == 0:
        return np.empty((0, b))
    out = _exact_directions(xp, wh, P, min_zeros)
    if descend and len(out):
        out = descend_mixtures(xp, wh.Ln, wh.tr, out, min_zeros, rng, budget=budget,
                               skip=None if known_q is None else host(known_q))
    return out


def _whiten(xp, L, thresh, basis: str, unit_norms) -> _Whitened:
    """The search basis's rows (see BASES), their thresholds, and an orthonormal U of them."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    norms = xp.linalg.norm(L, axis=1) if unit_norms is None else xp.asarray(unit_norms, dtype=xp.float64)
    if basis == "plain":
        norms = xp.full(L.shape[0], float(xp.median(norms)))
    Ln = L / norms[:, None]
    U, Ro = xp.linalg.qr(Ln)
    return _Whitened(Ln=Ln, tr=thresh / norms, U=U, Ro=Ro)


def _constrained_stage(xp, wh: _Whitened, comp, rng, budget):
    """Deflation by constraint: sparse vectors outside the known ones, by l0-like IRLS
    under a linear constraint that every known direction violates (constrained_irls), from
    8 random constraints per open dimension. Finds the last columns of zero-mean batches at
    once; all-positive batches need the aligned starts of the ADM stage. Its results are
    rounded as they are: a second, unconstrained IRLS from delta = 1/sqrt(m) again left
    the last two columns of a b = 128 batch at 1e-6 on their zero rows beside a non-zero
    row at 4e-6, too close to round (both were exact straight from the constraint)."""
    b, k = comp.shape
    nf = min(max(8 * k, 16), 4 * b)
    F = comp @ xp.asarray(rng.standard_normal((k, nf)))             # L coordinates
    Gc = xp.linalg.solve(wh.Ro.T, F)                               # g^T p = f^T q
    return constrained_irls(xp, wh.U, Gc, CONSTRAINED_STEPS, budget=budget)


def _adm_stage(xp, wh: _Whitened, known_q, rng, num_starts, adm_iters, adm_lam, max_refine,
               budget, adm_dtype=np.float64, adm_schedule=None,
               aligned_share=ALIGNED_START_FRACTION, project_starts=False):
    """Starts (random rows, plus rows aligned with what the known directions leave open),
    batched ADM with continuation, distinct results away from the known directions, the
    sparsest first. Returns (P: b x s starts for IRLS, comp: the complement or None)."""
    U, Ro = wh.U, wh.Ro
    m = U.shape[0]
    s = min(m, int(num_starts) if num_starts else 8 * U.shape[1])
    comp = Kw = None
    if known_q is not None:
        comp = _complement(xp, _credible(xp, wh.Ln, wh.tr, known_q))
        Kw = Ro @ known_q.T                  # the known columns, whitened (b x k)
    rows = rng.permutation(m)[:s]
    if comp is not None:
        # Deflation by starts: rows of L that point into the space the known directions
        # leave open (the complement is the dual of the missing columns: a row made
        # mostly of missing inputs lies close to it). Half the starts, the rest random.
        score = host(xp.linalg.norm(wh.Ln @ comp, axis=1))
        aligned = np.argsort(-score)[: max(1, int(aligned_share * s))]
        rows = np.concatenate([aligned, rows[~np.isin(rows, aligned)][: s - len(aligned)]])
    Ua = U.astype(adm_dtype)
    P = Ua[xp.asarray(rows)].T.copy()        # b x s
    if project_starts and Kw is not None:
        Pk = xp.linalg.qr(Kw)[0].astype(adm_dtype)
        P -= Pk @ (Pk.T @ P)
    P /= xp.linalg.norm(P, axis=0, keepdims=True)
    if adm_schedule is None:
        adm_schedule = _default_stages(adm_iters, adm_lam, steered=comp is not None)
    P = _fit_starts(xp, Ua, P, sum(steps for steps, _ in adm_schedule), budget)
    for steps, lam in adm_schedule:
        P = adm(xp, Ua, P, steps, lam / np.sqrt(m), budget=budget)
    P = P.astype(xp.float64)
    P /= xp.linalg.norm(P, axis=0, keepdims=True)
    P = _distinct_columns(xp, P, MERGE_COS)
    if Kw is not None and P.shape[1]:
        Pk = Kw / xp.linalg.norm(Kw, axis=0, keepdims=True)
        near = host(xp.abs(Pk.T @ P).max(axis=0)) > MERGE_COS
        P = P[:, xp.asarray(np.flatnonzero(~near))]
    # The sparsest ADM results first (smallest l1 norm of the unit vector U p); the rest
    # are mostly unconverged starts or mixtures, and IRLS costs m b^2 per start and step.
    cap = max_refine if max_refine is not None else s
    if P.shape[1] > cap:
        l1 = host(xp.abs(U @ P).sum(axis=0))
        P = P[:, xp.asarray(np.argsort(l1)[:cap])]
    return P, comp


def _fit_starts(xp, U, P, steps: int, budget):
    """The first starts of P (b x s), as many as ADM_TIME_SHARE of the time left allows for
    ``steps`` ADM steps, timed on a probe of ADM_PROBE_STARTS starts (all of P without a
    deadline, or when the probe would be most of the work)."""
    left = None if budget is None else budget.remaining()
    if left is None or P.shape[1] <= 2 * ADM_PROBE_STARTS:
        return P
    t0 = budget.clock()
    probe = adm(xp, U, P[:, :ADM_PROBE_STARTS].copy(), ADM_PROBE_STEPS)
    float(probe[0, 0])                                   # waits for a GPU
    per_start_step = (budget.clock() - t0) / (ADM_PROBE_STARTS * ADM_PROBE_STEPS)
    fit = int(ADM_TIME_SHARE * left / max(per_start_step * steps, 1e-12))
    return P[:, :max(fit, ADM_PROBE_STARTS)] if fit < P.shape[1] else P


def _default_stages(iters: int, lam: float | None, steered: bool) -> list:
    """ADM stages ((steps, lam * sqrt(m)), ...) when no schedule is given: ``lam`` alone if
    set, else a continuation.

    lam = 0.5 converges fast but its bias moves some correlated columns off their fixed
    points; lam = 0.25 puts them back (b = 100, m = 2000, 800 starts: 89 columns attracted
    after 300 steps at 0.25, 95 after 100 + 100). Columns the first rounds missed are often
    not even fixed points at 0.25 (the soft-threshold bias pulls them into a mixture with
    correlated neighbours); at 0.1 they are, so steered rounds continue there (slower)."""
    if lam is not None:
        return [(iters, lam)]
    return [(iters, 0.5), (iters, 0.25)] + ([(iters, 0.1)] if steered else [])


def _exact_directions(xp, wh: _Whitened, P, min_zeros: int) -> np.ndarray:
    """Round refined starts P (b x s) to exact directions in L's coordinates, keep those
    sparse enough, de-duplicated (host rows)."""
    Ln, tr = wh.Ln, wh.tr
    b = Ln.shape[1]
    Qc = xp.linalg.solve(wh.Ro, P).T             # s x b, L coordinates
    Qc = round_to_exact(xp, Ln, tr, Qc, rounds=2)
    z = host(_zero_rows(xp, xp.abs(Ln @ Qc.T), tr, b).sum(axis=0))
    # Columns of one batch are about equally sparse; near-exact points stuck on b-1 rows
    # plus a few parallel ones are not (and would only cost the caller a polish each).
    floor = max(min_zeros, min(2 * (b - 1), int(0.5 * z.max())))
    out = _dedupe_rows(host(Qc[xp.asarray(np.flatnonzero(z >= floor))]), DUPLICATE_COS)
    if len(out):
        out = polish_exact(xp, Ln, tr, xp.asarray(out))
        z = host((xp.abs(out @ Ln.T) <= tr[None, :]).sum(axis=1))
        out = _dedupe_rows(host(out[xp.asarray(np.flatnonzero(z >= floor))]), DUPLICATE_COS)
    return out


# ----------------------------------------------------------------------------- steps

def adm(xp, U, P, iters: int, lam: float | None = None, budget: Budget | None = None):
    """Batched alternating directions for min ||U p||_1 on the sphere (one column per start):
    X = soft_threshold(U P, lam), P = normalize(U^T X). lam = 0.25 / sqrt(m) (a unit vector
    spread over m rows has entries ~ 1/sqrt(m))."""
    m = U.shape[0]
    lam = float(0.25 / np.sqrt(m) if lam is None else lam)
    for it in range(iters):
        if it % 10 == 0 and expired(budget):
            break
        # In place, in U's dtype (a numpy float64 lam would promote float32 arrays): the
        # soft threshold took as long as the two products (b = 128, m = 2000).
        X = U @ P
        Y = xp.abs(X)
        Y -= lam
        xp.maximum(Y, 0, out=Y)
        xp.copysign(Y, X, out=Y)
        Pn = U.T @ Y
        nrm = xp.sqrt((Pn * Pn).sum(axis=0))
        ok = nrm > 0
        Pn /= xp.where(ok, nrm, 1)[None, :]
        P = xp.where(ok[None, :], Pn, P)
    return P


def irls(xp, U, P, iters: int, delta0: float | None = None, decay: float = 0.5,
         floor: float = 1e-12, budget: Budget | None = None, power: float = 0.0):
    """Iteratively reweighted least squares for min sum_r |U_r p|^power, ||p|| = 1, per
    column: p <- smallest eigenvector of U^T diag(max(|U p|, delta)^(power-2)) U (two
    inverse-iteration steps from the current p), delta halving each step. power = 0 (a
    log / l0-like penalty) keeps correlated all-positive columns as fixed points where
    power = 1 (l1) drifts off them; the weights of the zero rows blow up, so the support
    becomes exact."""
    m = U.shape[0]
    delta = 1.0 / np.sqrt(m) if delta0 is None else delta0
    for _ in range(iters):
        if expired(budget):
            break
        W = xp.maximum(xp.abs(U @ P), delta) ** (power - 2.0)   # m x s
        Pn = _smallest_eigvecs(xp, U, W, P0=P, steps=2)       # b x s
        Pn *= xp.sign((Pn * P).sum(axis=0) + 1e-300)[None, :]
        P = Pn
        delta = max(delta * decay, floor)
    return P


def trimmed_refine(xp, wh: _Whitened, P, frac: float | None = None, rounds: int | None = None,
                   budget: Budget | None = None):
    """Refine converged ADM results (b x s, U coordinates) by trimmed least squares: the
    null vector of the ``frac`` smallest rows of |Ln q|, ``rounds`` times. A converged
    result's smallest 30% of rows are nearly all true zeros (a column has ~50%), so each
    round is one Gram per start where IRLS needs 12."""
    frac = TRIM_FRACTION if frac is None else frac
    rounds = TRIM_ROUNDS if rounds is None else rounds
    Ln, Ro = wh.Ln, wh.Ro
    Q = xp.linalg.solve(Ro, P).T
    Q /= xp.linalg.norm(Q, axis=1, keepdims=True)
    for _ in range(rounds):
        if expired(budget):
            break
        R = xp.abs(Ln @ Q.T)                                  # m x s
        cut = xp.quantile(R, frac, axis=0)
        Qn = _smallest_eigvecs(xp, Ln, (R <= cut[None, :]).astype(Ln.dtype), P0=Q.T, steps=2).T
        Qn *= xp.sign((Qn * Q).sum(axis=1) + 1e-300)[:, None]
        Q = Qn / xp.linalg.norm(Qn, axis=1, keepdims=True)
    P = Ro @ Q.T
    return P / xp.linalg.norm(P, axis=0, keepdims=True)


def constrained_irls(xp, U, Gc, iters: int, power: float = 0.0, decay: float = CONSTRAINED_DECAY,
                     floor: float = 1e-12, budget: Budget | None = None):
    """min ||U p||_(power) subject to g^T p = 1, one column g of Gc (b x c) each, by IRLS:
    p <- (U^T W U)^-1 g. With g orthogonal (in L's coordinates) to every known direction,
    no known column satisfies the constraint (it would need infinite scale), so the
    minimiser is a sparse vector that is *not* known: the deflation step of ER-SpUD-style
    dictionary learning. Returns unit columns (b x c)."""
    m, b = U.shape
    P = Gc / xp.linalg.norm(Gc, axis=0, keepdims=True)       # argmin ||U p||_2, g^T p = 1
    delta = 1.0 / np.sqrt(m)
    for _ in range(iters):
        if expired(budget):
            break
        W = xp.maximum(xp.abs(U @ P), delta) ** (power - 2.0)
        G = _weighted_grams(xp, U, W)                         # c x b x b
        X = xp.linalg.solve(G, Gc.T[:, :, None])[:, :, 0]     # c x b
        P = X.T / xp.linalg.norm(X, axis=1)[None, :]
        delta = max(delta * decay, floor)
    return P


def round_to_exact(xp, Ln, tr, Qc, rounds: int = 2):
    """Make near-solutions exact: for each q (rows of Qc), the null vector of its zero rows
    (:func:`_zero_rows`), batched through the Gram matrices of the selected rows. Fast but
    only accurate to ~1e-5 in angle (squared condition number): :func:`polish_exact`
    finishes the few that survive. Returns unit rows."""
    b = Ln.shape[1]
    for _ in range(rounds):
        R = xp.abs(Ln @ Qc.T)                                 # m x s
        sel = _zero_rows(xp, R, tr, b).astype(Ln.dtype)
        Qn = _smallest_eigvecs(xp, Ln, sel, P0=Qc.T, steps=2).T
        Qn *= xp.sign((Qn * Qc).sum(axis=1) + 1e-300)[:, None]
        Qc = Qn
    return Qc / xp.linalg.norm(Qc, axis=1, keepdims=True)


def _zero_rows(xp, R, tr, b: int):
    """Boolean (m x s): the zero rows of each column of R = |Ln q| (m x s).

    Every row under the tolerance tr, and at least the b-1 smallest, up to the first
    relative gap (> 10x) in the sorted residuals after those: a near-solution is ~1e-7 on
    its zero rows and ~1e-3 elsewhere, while tr may be as tight as 1e-11 (float64
    gradients), so a fixed threshold would select too few rows, or the wrong ones. The
    *first* gap, not the largest: a non-zero row with a tiny entry can sit between the
    two groups, and including it spoils the null vector."""
    m, s = R.shape
    k0 = min(b - 1, m) - 1
    hi = max(k0 + 2, int(0.9 * m))
    Rs = xp.sort(R, axis=0)
    ratio = Rs[k0 + 1:hi] / xp.maximum(Rs[k0:hi - 1], 1e-300)
    jump = ratio > ZERO_GAP_RATIO
    kk = xp.argmax(jump, axis=0)                              # first gap after row k0 + kk
    cols = xp.arange(s)
    cut = xp.where(jump[kk, cols], Rs[k0 + kk, cols], Rs[k0, cols])
    return R <= xp.maximum(cut[None, :], tr[:, None])


def polish_exact(xp, Ln, tr, Q, rounds: int = 2):
    """Null vector of each candidate's zero rows (:func:`_zero_rows`) by SVD, which reaches
    float64 tolerances (no squared condition number as in the Gram route). Q: (k, b)."""
    out = []
    b = Ln.shape[1]
    for q in Q:
        q = xp.asarray(q)
        last = None
        for _ in range(rounds):
            zero = _zero_rows(xp, xp.abs(Ln @ q)[:, None], tr, b)[:, 0]
            if int(zero.sum()) < b - 1 or (last is not None and bool(xp.all(zero == last))):
                break       # the same rows give the same null vector
            last = zero
            v = xp.linalg.svd(Ln[zero], full_matrices=False)[2][-1]
            q = v if float(v @ q) >= 0 else -v
        out.append(q / xp.linalg.norm(q))
    return xp.stack(out) if out else xp.empty((0, b))


def descend_mixtures(xp, Ln, tr, Q, min_zeros: int, rng, samples: int = 256,
                     max_dim: int = 6, budget: Budget | None = None,
                     max_visits: int | None = None, skip: np.ndarray | None = None) -> np.ndarray:
    """Split mixtures into the columns they mix; returns the directions that are not
    mixtures (or could not be split), de-duplicated.

    A direction whose zero rows leave a d-dimensional null space (d >= 2, after
    :func:`_mixture_dim` drops accidental rows) mixes d columns: each of them lies in that
    space and is zero on strictly more rows. Inside the space the problem is only
    d-dimensional, so sampling (d-1)-row submatrices works: every sample drawn from one
    column's extra zero rows gives exactly that column, so true children are the
    directions hit repeatedly. Children are split again in turn (a mix of three gives
    mixes of two)."""
    m, b = Ln.shape
    tol = float(host(tr.max()))
    queue = [np.asarray(q, dtype=np.float64) for q in Q]
    done = np.empty((0, b)) if skip is None else np.asarray(skip, dtype=np.float64).reshape(-1, b)
    queue = [q for q in queue if not (len(done) and np.abs(done @ q).max() > DUPLICATE_COS)]
    out = []
    visits = 0
    max_visits = max_visits if max_visits is not None else 4 * len(queue) + 4 * b
    while queue:
        q = queue.pop(0)
        if len(done) and np.abs(done @ q).max() > DUPLICATE_COS:
            continue
        done = np.vstack([done, q])
        timeout = expired(budget)
        if timeout or visits >= max_visits:
            out.append(q)
            continue
        visits += 1
        qx = xp.asarray(q)
        S = xp.abs(Ln @ qx) <= tr
        nS = int(S.sum())
        d, Vt = _mixture_dim(xp, Ln[S], tol, max_dim)
        if d < 2 or d > max_dim:
            out.append(q)
            continue
        N = Vt[b - d:].T                                      # b x d
        rest = np.flatnonzero(~host(S))
        if len(rest) < d - 1:
            out.append(q)
            continue
        M = Ln[xp.asarray(rest)] @ N                          # rows outside S, b-space -> d
        idx = np.argsort(rng.random((samples, len(rest))), axis=1)[:, : d - 1]
        sub = M[xp.asarray(idx)]                              # samples x (d-1) x d
        _, _, Vs = xp.linalg.svd(sub, full_matrices=True)
        C = host(Vs[:, -1, :])                           # samples x d
        C *= np.sign(C[np.arange(len(C)), np.argmax(np.abs(C), axis=1)])[:, None]
        _, first, counts = np.unique(np.round(C * 1e5).astype(np.int64), axis=0,
                                     return_index=True, return_counts=True)
        cand = C[first[counts >= 2]]
        kids = []
        if len(cand):
            Qs = xp.asarray(cand) @ N.T
            z = host((xp.abs(Qs @ Ln.T) <= tr[None, :]).sum(axis=1))
            # A column of the mix adds the rows where only it is zero: many, not a few.
            good = np.flatnonzero((z >= nS + max(b // 2, 2)) & (z >= min_zeros))
            if len(good):
                kids = list(host(polish_exact(xp, Ln, tr, Qs[xp.asarray(good)], rounds=1)))
        if kids:
            queue.extend(kids)
        else:
            out.append(q)
    return _dedupe_rows(np.array(out).reshape(-1, b), DUPLICATE_COS)


# ----------------------------------------------------------------------------- helpers

def _credible(xp, Ln, tr, known_q, ratio: float = CREDIBLE_ZERO_RATIO):
    """The known directions worth steering away from: sparsest first, independent, at most
    b-1 of them, and none much less sparse than the typical one (mixtures of columns have
    the intersection of their zero sets: 25-70% fewer zeros). So a caller may pass its
    whole candidate pool: a mixture there would otherwise close the complement that
    points to the column it stands in for."""
    b = known_q.shape[1]
    z = host((xp.abs(known_q @ Ln.T) <= tr[None, :]).sum(axis=1))
    order = np.argsort(-z, kind="stable")
    top = z[order[: b]]
    good = order[z[order] >= ratio * float(np.median(top))]
    Kh = host(known_q)
    basis, chosen = np.empty((0, b)), []
    for i in good:
        r = Kh[i] - basis.T @ (basis @ Kh[i])
        nr = np.linalg.norm(r)
        if nr > INDEPENDENCE_TOL:
            chosen.append(int(i))
            basis = np.vstack([basis, r / nr])
            if len(chosen) == b - 1:
                break
    return known_q[xp.asarray(np.array(chosen, dtype=np.int64))]


def _complement(xp, known_q, rel: float = COMPLEMENT_REL):
    """Orthonormal basis (b x k) of the directions orthogonal to every known direction, or
    None when the known directions already span everything."""
    b = known_q.shape[1]
    if known_q.shape[0] == 0:
        return xp.eye(b)
    _, sv, Vt = xp.linalg.svd(known_q, full_matrices=True)
    sv = host(sv)
    rank = int((sv > rel * sv[0]).sum()) if len(sv) else 0
    if rank >= b:
        return None
    return Vt[rank:].T


def _mixture_dim(xp, A, tol: float, max_dim: int):
    """Dimension of the null space of the rows A (k x b) once the few rows that cut it
    down by accident are dropped, and the right singular vectors (last d span it).

    An exact point found by l1/IRLS inside the span of d columns is a vertex: zero on the
    common zero rows of those columns and on one or two more rows of its own choosing.
    Those rows each remove one null dimension; each shows up as a single row carrying
    most of the weight of one of the small singular directions, and is dropped."""
    b = A.shape[1]
    keep = np.arange(A.shape[0])
    for _ in range(max_dim + 1):
        Us, sv, Vt = xp.linalg.svd(A[xp.asarray(keep)], full_matrices=len(keep) < b)
        sv = np.concatenate([host(sv), np.zeros(max(0, b - len(keep)))])
        level = MIXTURE_LEVEL * tol * np.sqrt(max(len(keep), 1))
        d = int((sv <= level).sum())
        k = b - d - 1                                 # the smallest non-null direction
        if d >= max_dim or k < 0 or k >= Us.shape[1]:
            return d, Vt
        w = host(Us[:, k]) ** 2
        r = int(np.argmax(w))
        if w[r] < 0.5:
            return d, Vt
        keep = np.delete(keep, r)
    return d, Vt


def _weighted_grams(xp, A, W):
    """A^T diag(w) A for each column w of W (m x s, w >= 0): (s, b, b), one product
    (A sqrt(w))^T (A sqrt(w)) per column. A loop of plain matrix products: the broadcast
    (s, b, m) product it replaced took 4x as long (b = 128, m = 2000, 64 columns: 0.64 s
    against 0.15 s on one core)."""
    m, b = A.shape
    s = W.shape[1]
    G = xp.empty((s, b, b), dtype=A.dtype)
    Sw = xp.sqrt(W)
    for j in range(s):
        Aw = A * Sw[:, j:j + 1]
        G[j] = Aw.T @ Aw
    return G


def _smallest_eigvecs(xp, A, W, P0=None, steps: int = 1):
    """For each column w of W (m x s): the eigenvector of A^T diag(w) A with the smallest
    eigenvalue (b x s). With a current guess P0 (b x s), ``steps`` of inverse iteration
    instead of a full eigendecomposition (a Cholesky-sized solve, ~20x cheaper than eigh
    at b = 256; IRLS and rounding re-weight between steps anyway)."""
    m, b = A.shape
    chunk = max(1, int((1 << 27) // (8 * b * m)))
    out = []
    for j in range(0, W.shape[1], chunk):
        G = _weighted_grams(xp, A, W[:, j:j + chunk])
        if P0 is None:
            _, V = xp.linalg.eigh(G)
            out.append(V[:, :, 0].T)
            continue
        ridge = 1e-13 * xp.trace(G, axis1=1, axis2=2) / b
        G = G + ridge[:, None, None] * xp.eye(b)[None, :, :]
        X = P0[:, j:j + chunk].T                              # c x b
        for _ in range(steps):
            X = xp.linalg.solve(G, X[:, :, None])[:, :, 0]
            X = X / xp.linalg.norm(X, axis=1, keepdims=True)
        out.append(X.T)
    return xp.concatenate(out, axis=1)


def _distinct_columns(xp, P, cos: float):
    """Greedy: keep a column unless |cos| with a kept one exceeds ``cos``."""
    C = host(xp.abs(P.T @ P))
    keep = _greedy_distinct(C, cos)
    return P[:, xp.asarray(keep)]


def _dedupe_rows(Q: np.ndarray, cos: float) -> np.ndarray:
    if len(Q) == 0:
        return Q
    Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    return Q[_greedy_distinct(np.abs(Q @ Q.T), cos)]


def _greedy_distinct(C: np.ndarray, cos: float) -> np.ndarray:
    n = len(C)
    alive = np.ones(n, dtype=bool)
    keep = []
    for j in range(n):
        if alive[j]:
            keep.append(j)
            alive &= ~(C[j] > cos)
    return np.array(keep, dtype=np.int64)
