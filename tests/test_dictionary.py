"""The dictionary-learning source of directions (spear.attack.dictionary): it must return
the true columns of Q, exact, for batches where sampling is hopeless."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gradients import first_layer_gradients, matched_relative_errors
from spear.attack import prepare
from spear.attack.dictionary import dictionary_proposals
from spear.attack.tolerance import default_min_zeros, row_thresholds
from spear.attack.scale import scales
from spear.attack.select import CandidatePool, greedy_independent

#: A returned direction counts as a true column when |cos| exceeds this.
EXACT_COS = 1 - 1e-6


def _layer(b, m, positive, dtype, seed):
    """What reconstruct hands to the proposals (the prepared problem: live rows of L, the
    tolerance policy), plus the true unit columns of Q computed from the known inputs."""
    g = first_layer_gradients(b, width=m, n=784, positive=positive, dtype=dtype, seed=seed)
    p = prepare(g.grad_weight, g.grad_bias, b, weight=g.weight, bias=g.bias, device="cpu")
    X = g.inputs                                              # b x n
    gW = g.grad_weight.double().numpy()
    dZ = gW @ X.T @ np.linalg.inv(X @ X.T)                    # m x b, exact up to rounding
    # The source's view: M = A * sigma (live rows of gW V_b), the pool's noise rule.
    M = p.search * p.noise_live[:, None]
    Qtrue = np.linalg.lstsq(M, dZ[p.live], rcond=None)[0]
    Qtrue = (Qtrue / np.linalg.norm(Qtrue, axis=0)).T         # rows
    t = p.tolerances
    return dict(g=g, problem=p, L=M, thresh=t.thresh_pool * p.noise_live, min_zeros=t.min_zeros,
                Qtrue=Qtrue)


def _hits(Qtrue, q):
    """Which true columns appear among the proposals q (rows)."""
    if len(q) == 0:
        return np.zeros(len(Qtrue), dtype=bool)
    return np.abs(Qtrue @ q.T).max(axis=1) > EXACT_COS


def _check_contract(q, L, thresh, min_zeros):
    assert q.ndim == 2 and q.shape[1] == L.shape[1]
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0)
    zeros = (np.abs(q @ L.T) <= thresh[None, :]).sum(axis=1)
    assert (zeros >= min_zeros).all(), zeros.min()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("positive", [False, True], ids=["zero-mean", "positive"])
def test_proposals_contain_every_column(positive, dtype):
    b, m = (24, 800) if positive else (32, 600)
    d = _layer(b, m, positive, dtype, seed=7)
    known = None
    found = np.zeros(b, dtype=bool)
    for rnd in range(3):                       # first round, then steered rounds if needed
        q = dictionary_proposals(d["L"], thresh=d["thresh"], min_zeros=d["min_zeros"],
                                 seed=rnd, known=known)
        _check_contract(q, d["L"], d["thresh"], d["min_zeros"])
        found |= _hits(d["Qtrue"], q)
        if found.all():
            break
        known = q if known is None else np.vstack([known, q])
    assert found.all(), f"{found.sum()}/{b} columns after {rnd + 1} rounds"
    if not positive:
        assert rnd <= 1                        # zero-mean inputs: a steered round at most


def test_known_steers_to_the_missing_columns():
    b, m = 32, 600
    d = _layer(b, m, False, torch.float64, seed=3)
    rng = np.random.default_rng(0)
    missing = rng.choice(b, 6, replace=False)
    known = np.delete(d["Qtrue"], missing, axis=0)
    # Few starts: without steering, most of them would land on the 26 known columns.
    q = dictionary_proposals(d["L"], thresh=d["thresh"], min_zeros=d["min_zeros"], seed=1,
                             known=known, num_starts=8)
    _check_contract(q, d["L"], d["thresh"], d["min_zeros"])
    assert _hits(d["Qtrue"][missing], q).all()
    # ... and it does not spend its output on what is already known.
    assert (np.abs(q @ known.T).max(axis=1) > EXACT_COS).sum() <= 2


def test_planted_b32_where_sampling_is_hopeless():
    # rho = 0.5, b = 32: the sampler needs ~H_b * 2^31 ~ 9e9 samples; this takes a second.
    rng = np.random.default_rng(11)
    b, m = 32, 500
    dZ = rng.standard_normal((m, b)) * (rng.random((m, b)) > 0.5)
    dZ = dZ[dZ.any(axis=1)]
    Qinv = rng.standard_normal((b, b))
    L = dZ @ Qinv
    thresh = row_thresholds(L, 1e-9)
    min_zeros = default_min_zeros(L.shape[0], b, 1e-9)
    Qtrue = np.linalg.inv(Qinv)
    Qtrue = (Qtrue / np.linalg.norm(Qtrue, axis=0)).T
    pool = CandidatePool(L, thresh, row_thresholds(L, 1e-11))
    q = dictionary_proposals(L, thresh=thresh, min_zeros=min_zeros, seed=0)
    _check_contract(q, L, thresh, min_zeros)
    assert _hits(Qtrue, q).sum() >= b - 3          # nearly all from the first round
    pool.add(q)
    chosen = greedy_independent(pool.q, pool.order(), b)
    if len(chosen) < b:                            # the rest: one round steered by them
        q = dictionary_proposals(L, thresh=thresh, min_zeros=min_zeros, seed=1,
                                 known=pool.q[chosen])
        _check_contract(q, L, thresh, min_zeros)
        pool.add(q)
        chosen = greedy_independent(pool.q, pool.order(), b)
    # The caller's selection picks exactly the true columns.
    assert len(chosen) == b
    assert _hits(pool.q[chosen], Qtrue).all()


@pytest.mark.parametrize("positive", [False, True], ids=["zero-mean", "positive"])
def test_end_to_end_exact_and_certified(positive):
    """What reconstruct(method="dictionary") does: proposals -> pool -> greedy -> scales ->
    inputs -> certificate, on float32 gradients at b = 32."""
    b, m = 32, 1000
    d = _layer(b, m, positive, torch.float32, seed=5)
    g, p = d["g"], d["problem"]
    t = p.tolerances
    pool = CandidatePool(p.search, t.thresh, t.thresh_pool)      # as the search keeps it
    certifier = p.certifier
    known, cert = None, None
    for rnd in range(5):
        # Proposals come in the search's coordinates (those of M and of the pool).
        pool.add(dictionary_proposals(d["L"], thresh=d["thresh"], min_zeros=d["min_zeros"],
                                      seed=rnd, known=known))
        chosen = greedy_independent(pool.q, pool.order(), b)
        known = pool.q[chosen]
        if len(chosen) < b:
            continue
        Qunit = p.to_factor(known).T
        Q = Qunit * scales(np, p.L, Qunit, p.gb)[None, :]
        cert = certifier(Q)
        if cert.certified:
            break
        # A mixture stands in for a missing column: steer by the certified columns.
        known = known[cert.per_column == 0]
    assert cert is not None and cert.certified, (rnd, len(chosen))
    X = np.linalg.solve(Q, p.R)
    assert matched_relative_errors(X, g.inputs).max() < 1e-4


def test_a_wrong_direction_is_never_returned():
    # Random L (no sparse structure): nothing passes the sparsity filter.
    rng = np.random.default_rng(2)
    L = rng.standard_normal((300, 16))
    thresh = row_thresholds(L, 1e-9)
    q = dictionary_proposals(L, thresh=thresh, min_zeros=default_min_zeros(300, 16, 1e-9))
    assert q.shape == (0, 16)


def test_single_input():
    L = np.arange(1.0, 6.0)[:, None]
    q = dictionary_proposals(L, thresh=row_thresholds(L, 1e-9), min_zeros=0)
    assert q.shape == (1, 1) and q[0, 0] == 1.0
