"""``spear.reconstruct``: the whole SPEAR pipeline from one layer's gradients.

decompose (truncated SVD) -> drop all-zero rows of L -> sample directions in chunks ->
pool (de-duplicate, polish) -> greedy selection, revisited with the certificate ->
scale and sign from grad_bias -> inputs from Q^-1 R -> certificate.
Sees only what a server sees: gradients, the layer's weight and bias, settings.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import backend as _backend
from . import validate
from .certify import Certificate, Certifier
from .decompose import factorize, noise_scale, relative_noise
from .kernel import min_zeros_for, row_thresholds, sample_directions
from .scale import scales
from .select import INDEPENDENCE_TOL, CandidatePool, greedy_independent

METHODS = ("sample", "dictionary", "auto")
#: Samples evaluated when neither max_samples nor time_limit is given.
DEFAULT_MAX_SAMPLES = 500_000_000
_FIRST_CHUNK, _MAX_CHUNK = 1 << 14, 1 << 22


@dataclass
class Reconstruction:
    """Result of :func:`reconstruct`.

    inputs: (b, n) recovered inputs, one per row, in arbitrary order; None when incomplete.
    complete: all b independent directions were found (and, with the layer given, the
        certificate's graded check calls them consistent).
    certified: the certificate's exact verdict when weight and bias were given, else None.
        Under noise (DP, FedAvg drift) it is False: exactness cannot be proven there, and
        ``certificate.violation_rate`` grades the result instead.
    noise_level: relative noise of L, s_{b+1} / s_b (0 to 1e-7 for exact float32 gradients).
    fit: relative residuals of what was recovered: "weight" ||gW - L R|| / ||gW|| (what
        rank b cannot explain) and "bias" ||dZ' 1 - gb|| / ||gb||.
    """

    inputs: np.ndarray | None
    complete: bool
    certified: bool | None
    batch_size: int
    directions: np.ndarray            # (b, k) unit directions found so far (columns)
    noise_level: float                # relative noise of the low-rank factor L
    stats: dict[str, Any] = field(default_factory=dict)
    certificate: Certificate | None = None
    fit: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"Reconstruction(batch_size={self.batch_size}, complete={self.complete}, "
                f"certified={self.certified}, samples={self.stats.get('samples')}, "
                f"backend={self.stats.get('backend')!r})")


def reconstruct(grad_weight, grad_bias, batch_size: int | None = None, *, weight=None, bias=None,
                device: str = "auto", seed: int = 0, max_samples: int | None = None,
                time_limit: float | None = None, progress: bool = False,
                method: str = "auto") -> Reconstruction:
    """Recover the inputs of a linear layer followed by a ReLU from its gradients.

    Parameters
    ----------
    grad_weight, grad_bias : (m, n) and (m,) gradients (or an update scaled like one) as
        numpy arrays, torch tensors or CuPy arrays, float32 or float64.
    batch_size : number of inputs b; None infers it from the singular value gap.
    weight, bias : the layer's parameters (the server knows them); enable the certificate.
    device : "auto", "cpu" or "cuda".
    seed : sampler seed (same seed, same submatrices on every backend).
    max_samples, time_limit : sampling budget (samples, seconds). When exhausted the
        result has ``complete=False`` and ``inputs=None``: never a guess.
    progress : show a progress bar.
    method : where candidate directions come from: "sample" (random submatrices, the
        compiled kernel), "dictionary" (sparse dictionary recovery from many starts, for
        large batches) or "auto" (dictionary proposals first, the sampler for the rest).
    """
    t_start = time.perf_counter()
    m, n, dtype = validate.check_gradients(grad_weight, grad_bias)
    validate.check_layer(weight, bias, m, n)
    validate.check_batch_size(batch_size, m, n)
    if max_samples is not None and (int(max_samples) != max_samples or max_samples < 0):
        raise ValueError(f"max_samples must be a non-negative integer, got {max_samples!r}")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be positive seconds, got {time_limit!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    be = _backend.resolve(device)
    xp = be.xp
    # Work in float64 whatever the gradient's dtype: the noise it carries is estimated below.
    gW = be.asarray(grad_weight, dtype=xp.float64)
    gb = be.asarray(grad_bias, dtype=xp.float64)
    validate.check_finite(xp, gW, "grad_weight")
    validate.check_finite(xp, gb, "grad_bias")
    W = Bv = None
    if weight is not None:
        W, Bv = be.asarray(weight, dtype=xp.float64), be.asarray(bias, dtype=xp.float64)
        validate.check_finite(xp, W, "weight")
        validate.check_finite(xp, Bv, "bias")

    t0 = time.perf_counter()
    fac = factorize(xp, gW, batch_size, dtype)
    b = fac.L.shape[1]
    seconds = {"svd": time.perf_counter() - t0}
    s = fac.singular_values
    # Relative noise of L: what lies beyond the b-th singular value (or the dtype's rounding).
    noise_rel = relative_noise(s, b)
    # Null vectors of (b-1) x b submatrices amplify that noise by the submatrix's
    # condition number: the sampler gets a loose tolerance (badly conditioned samples are
    # rejected, which only costs samples), polished candidates are judged by a tight one.
    tol = float(np.clip(1e3 * noise_rel, 1e-11, 1e-4))
    tol_pool = float(np.clip(1e2 * noise_rel, 1e-13, 1e-5))
    # Additive noise (DP-SGD, FedAvg drift) is the same on every row: an absolute floor,
    # in standard deviations of the noise in L q, next to the relative tolerances.
    sigma = noise_scale(s, b, m, n)
    floor, floor_pool = SAMPLER_SIGMAS * sigma, POOL_SIGMAS * sigma

    # Neurons inactive for the whole batch (computed where gW lives: it can be GBs).
    keep = be.to_numpy(xp.abs(gW).sum(axis=1) > 0)
    # Their rows of L are rounding noise, not zeros: make them exact zeros.
    fac.L[xp.asarray(~keep)] = 0
    L = np.ascontiguousarray(be.to_numpy(fac.L)[keep])
    stats: dict[str, Any] = {
        "backend": be.name, "batch_size": b, "rows": int(m), "rows_used": int(keep.sum()),
        "tol": tol, "tol_pool": tol_pool, "noise_level": noise_rel, "noise_floor": sigma,
        "seed": int(seed),
        "singular_values": s.tolist(),
    }
    if L.shape[0] < b - 1:
        raise ValueError(f"only {L.shape[0]} neurons of {m} have a non-zero gradient; "
                         f"at least b-1 = {b - 1} are needed")

    thresh = row_thresholds(L, tol, floor)
    # Under noise a true column's zeros blur into the chance zeros of a wrong proposal:
    # accept more (the pool polishes and ranks them) rather than none.
    row_norms = np.linalg.norm(L, axis=1)
    noisy = floor > tol * float(np.median(row_norms))
    min_zeros = min_zeros_for(L, thresh, tail=NOISY_TAIL if noisy else 1e-12)
    stats["noisy"] = bool(noisy)
    stats["min_zeros"] = min_zeros
    thresh_pool = row_thresholds(L, tol_pool, floor_pool)
    pool = CandidatePool(L, thresh, thresh_pool)
    budget = DEFAULT_MAX_SAMPLES if max_samples is None and time_limit is None else max_samples
    certifier = None if W is None else Certifier(xp, fac.L, fac.R, W, Bv, noise_rel, sigma)
    # Under noise two polishes of one column differ by ~noise in angle: not independent.
    state = _Search(b=b, xp=xp, L=fac.L, R=fac.R, gb=gb, certifier=certifier,
                    deadline=None if time_limit is None else t_start + time_limit,
                    independence_tol=max(INDEPENDENCE_TOL, min(0.2, 3.0 * noise_rel)))

    t0 = time.perf_counter()
    samples, chunk, raw = 0, _FIRST_CHUNK, 0
    # b independent directions first seen after n1 samples: without a certificate, keep
    # sampling to 2*n1 so that a mixture standing in for a still-missing column is replaced.
    n1: int | None = None
    bar = _progress_bar(progress, budget, b)
    result = None
    if b == 1:
        pool.add(np.ones((1, 1)))
    try:
        use_dictionary = method in ("dictionary", "auto") and b > 1
        rounds = 0
        while True:
            selected = False          # a dictionary round selects after itself
            if use_dictionary:
                if time_limit is not None and time.perf_counter() - t_start > time_limit:
                    break
                added, result = _dictionary_round(pool, L, thresh_pool, min_zeros,
                                                  seed + rounds, state, t_start, time_limit)
                rounds += 1
                selected = True
                # "auto" hands over to the sampler once a round finds nothing new, and
                # samples a chunk after every round meanwhile so that neither source
                # starves the other (a round can find one direction at a time).
                if method == "auto" and added == 0:
                    use_dictionary = False
                elif method == "dictionary" and added == 0 and rounds >= _MAX_STALE_ROUNDS:
                    break
            sampled = b > 1 and method != "dictionary" and not (use_dictionary and rounds == 1)
            if sampled:
                if budget is not None and samples >= budget:
                    break
                if time_limit is not None and time.perf_counter() - t_start > time_limit:
                    break
                todo = chunk if budget is None else min(chunk, budget - samples)
                if time_limit is not None and samples:
                    # Size the chunk by the measured rate so the limit is not overshot.
                    rate = samples / max(time.perf_counter() - t0, 1e-9)
                    left = time_limit - (time.perf_counter() - t_start)
                    todo = int(max(1024, min(todo, rate * left)))
                d = sample_directions(L, todo, seed=seed, tol=tol, floor=floor, min_zeros=min_zeros,
                                      device="cuda" if be.name == "cuda" else "cpu",
                                      offset=samples)
                samples += todo
                raw += len(d.q)
                pool.add(be.to_numpy(d.q), be.to_numpy(d.zeros))
                chunk = min(chunk * 2, _MAX_CHUNK)
            if sampled or not selected:
                result = state.try_select(pool)
            if bar is not None:
                bar.update(samples - bar.n)
                bar.set_postfix(found=f"{state.found}/{b}", pool=len(pool))
            if result is not None:
                if b == 1 or (W is not None and result[2].certified):
                    break
                # Not provably exact (no layer, or noise): keep sampling to 2*n1 so that
                # a mixture standing in for a missing column can still be replaced.
                if W is None or result[2].consistent:
                    n1 = samples if n1 is None else n1
                    if samples >= 2 * n1:
                        break
            elif b == 1:
                break
    finally:
        if bar is not None:
            bar.close()
    seconds["sampling"] = time.perf_counter() - t0 - state.select_seconds
    seconds["selection"] = state.select_seconds
    stats.update(samples=samples, candidates=raw, unique_candidates=len(pool),
                 directions_found=state.found, method=method, dictionary_rounds=rounds)

    # With the layer known, only a set the certificate calls at least consistent counts as
    # complete. Consistent is graded evidence, not proof (a wrong set with violations
    # spread evenly can pass it); only ``certified`` proves.
    inputs = cert = None
    certified = None if W is None else False
    fit: dict[str, float] = {}
    if result is not None:
        Q, X, cert = result
        if W is None:
            cert = None
        else:
            certified = bool(cert.certified)
        explained = float(np.sum(np.asarray(s[:b], dtype=np.float64) ** 2))
        total = float(xp.sum(gW * gW))
        fit = {"weight": float(np.sqrt(max(total - explained, 0.0) / total)),
               "bias": float(xp.linalg.norm((fac.L @ Q).sum(axis=1) - gb))
               / max(float(xp.linalg.norm(gb)), 1e-300)}
    complete = result is not None and (cert is None or cert.consistent)
    if complete:
        inputs = be.to_numpy(X)
    seconds["total"] = time.perf_counter() - t_start
    stats["seconds"] = seconds
    return Reconstruction(inputs=inputs, complete=complete, certified=certified, batch_size=b,
                          directions=state.best_directions, noise_level=noise_rel, stats=stats,
                          certificate=cert, fit=fit)


@dataclass
class _Search:
    """Selection state across chunks: greedy choice, then certificate-guided swaps."""

    b: int
    xp: Any
    L: Any               # m x b factor (xp), all rows
    R: Any
    gb: Any
    certifier: Certifier | None
    found: int = 0
    select_seconds: float = 0.0
    best_directions: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    deadline: float | None = None
    independence_tol: float = INDEPENDENCE_TOL
    _last_key: tuple = ()
    _last_choice: list = field(default_factory=list)

    def try_select(self, pool: CandidatePool):
        """(Q, X, certificate) once b independent directions are in the pool, else None."""
        t0 = time.perf_counter()
        try:
            order = pool.order()
            chosen = greedy_independent(pool.q, order, self.b, tol=self.independence_tol)
            self.found = len(chosen)
            self.best_directions = pool.q[chosen].T.copy()
            if len(chosen) < self.b:
                return None
            if self.certifier is not None:
                chosen = self._revisit(pool, order, chosen)
                self.best_directions = pool.q[chosen].T.copy()
            return self._solve(pool.q[chosen])
        finally:
            self.select_seconds += time.perf_counter() - t0

    def _scaled(self, Qrows: np.ndarray):
        xp = self.xp
        Qunit = xp.asarray(Qrows.T)
        return Qunit * scales(xp, self.L, Qunit, self.gb)[None, :]

    def _solve(self, Qrows: np.ndarray):
        Q = self._scaled(Qrows)
        X = self.xp.linalg.solve(Q, self.R)
        cert = self.certifier(Q) if self.certifier is not None else None
        return Q, X, cert

    def _revisit(self, pool, order, chosen, max_rounds: int = 4) -> list[int]:
        """Second stage: while the certificate fails, make the single swap (one chosen
        direction out, one pool direction in, independence kept) that removes the most
        violations. Fixes sets where a mixture of two columns outranked a true column.
        Bounded: the most-violating columns, the sparsest spare candidates, and only when
        the pool changed since the last attempt."""
        key = (len(pool), tuple(chosen))
        if key == self._last_key:
            return self._last_choice
        best = self.certifier(self._scaled(pool.q[chosen]))
        spares = [int(c) for c in order if int(c) not in chosen][: 2 * self.b + 16]
        for _ in range(max_rounds):
            if best.certified or (self.deadline is not None and time.perf_counter() > self.deadline):
                break
            improved = None
            worst = np.lexsort((-best.column_rates, -best.per_column))
            for pos in worst[:4]:
                if self.deadline is not None and time.perf_counter() > self.deadline:
                    break
                rest = chosen[:pos] + chosen[pos + 1:]
                for cand in spares:
                    if cand in chosen:
                        continue
                    if self.deadline is not None and time.perf_counter() > self.deadline:
                        break
                    trial = greedy_independent(pool.q, np.array([cand]), self.b, fixed=rest,
                                               tol=self.independence_tol)
                    if len(trial) < self.b:
                        continue
                    cert = self.certifier(self._scaled(pool.q[trial]))
                    if cert.badness() < best.badness():
                        best, improved = cert, trial
            if improved is None:
                break
            chosen = improved
        self._last_key, self._last_choice = key, chosen
        return chosen


_MAX_STALE_ROUNDS = 3
#: Noise floors in standard deviations of the noise in L q: the sampler's loose one (its
#: b-1 rows amplify the noise by the submatrix's conditioning), the pool's tight one.
SAMPLER_SIGMAS, POOL_SIGMAS = 10.0, 3.0
#: Chance per sample that a wrong proposal passes the sampler, under noise (1e-12 without).
NOISY_TAIL = 1e-4


def _dictionary_round(pool, L, thresh, min_zeros, seed, state, t_start, time_limit):
    """One batch of dictionary proposals, steered away from the directions chosen so far.
    Returns (new independent directions, the selection after the round)."""
    from .dictionary import dictionary_proposals

    known = state.best_directions.T if state.best_directions.size else None
    left = None if time_limit is None else max(time_limit - (time.perf_counter() - t_start), 0.0)
    # The first round starts everywhere (8b starts); steered rounds need fewer.
    starts = None if known is None else 4 * L.shape[1]
    q = dictionary_proposals(L, thresh=thresh, min_zeros=min_zeros, seed=seed, known=known,
                             xp=np, time_limit=left, num_starts=starts)
    before = state.found
    pool.add(np.asarray(q), deadline=state.deadline)
    result = state.try_select(pool)
    return state.found - before, result


def _progress_bar(enabled: bool, total, b: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    # leave=False: under the CLI's per-batch bar, one line per batch would pile up.
    return tqdm(total=total, unit="sample", unit_scale=True, desc=f"SPEAR b={b}", leave=False)
