"""The pool and its repairs on a factor with inputs of very different strength (a trained
network): a weak input's column must not be lost to a direction a hair away from it."""
from __future__ import annotations

import numpy as np

from spear.attack.select import CandidatePool, polish, regrow

K = 8.0          # zero threshold in noise sigmas (the pool's, on a whitened factor)


def _weak_and_strong(seed=1, m=600, b=12):
    """A factor as the search sees it, A = U S (+ unit noise) from dZ = U S V^T, whose
    inputs span 1e3..1e8 noise sigmas with heavy-tailed entries, and its true unit
    directions (rows of V): A P[i] = dZ[:, i] + noise."""
    rng = np.random.default_rng(seed)
    dZ = rng.standard_normal((m, b)) * np.exp(1.5 * rng.standard_normal((m, b)))
    dZ *= (rng.random((m, b)) < 0.5) * np.logspace(3, 8, b)[None, :]   # column 0 weakest
    U, S, Vt = np.linalg.svd(dZ, full_matrices=False)
    return U * S + rng.standard_normal((m, b)), Vt.T.copy(), np.full(m, K)


def _zeros(A, p, thresh):
    return int(np.count_nonzero(np.abs(A @ p) <= thresh))


def test_a_soft_mixture_is_a_fixed_point_that_regrow_leaves():
    A, P, thresh = _weak_and_strong()
    truth = polish(A, thresh, P[0], rounds=5)
    # The weak column plus a trace of the strongest one, polished to a fixed point.
    q = polish(A, thresh, truth + 3e-7 * P[-1], rounds=5)
    assert _zeros(A, q, thresh) < _zeros(A, truth, thresh) - 50     # the polish alone is stuck
    assert 1 - abs(q @ truth / np.linalg.norm(q)) < 1e-9              # ... a hair away
    kids = regrow(A, thresh, q, np.random.default_rng(0))
    best = kids[np.argmax([_zeros(A, k, thresh) for k in kids])]
    assert _zeros(A, best, thresh) == _zeros(A, truth, thresh)
    assert 1 - abs(best @ truth) < 1e-9


def test_regrow_of_a_true_column_finds_nothing():
    A, P, thresh = _weak_and_strong()
    for i in (0, 5, 11):
        truth = polish(A, thresh, P[i], rounds=5)
        assert len(regrow(A, thresh, truth, np.random.default_rng(0))) == 0


def test_the_pool_keeps_the_polish_with_more_zeros():
    A, P, thresh = _weak_and_strong()
    pool = CandidatePool(A, thresh)
    truth = polish(A, thresh, P[0], rounds=5)
    q = polish(A, thresh, truth + 3e-7 * P[-1], rounds=5)
    pool.add(q[None, :])
    before = int(pool.zeros[0])
    pool.add(truth[None, :])                     # the true column, a hair away
    assert len(pool) == 1 and pool.hits[0] == 2
    assert pool.zeros[0] > before and 1 - abs(pool.q[0] @ truth) < 1e-12


def test_a_much_less_sparse_column_still_completes_the_selection():
    """Columns of one batch can differ in sparsity by more than 2x (a trained TinyImageNet
    MLP: 397 zeros beside 921); when the sparse ones give fewer than b directions, the
    selection takes such a column, but not junk with about the zeros chance gives."""
    import torch

    from gradients import first_layer_gradients
    from spear.attack import Budget, prepare
    from spear.attack.search import Selector

    g = first_layer_gradients(4, width=50, dtype=torch.float64, seed=0)
    p = prepare(g.grad_weight, g.grad_bias, 4, weight=g.weight, bias=g.bias)
    chance = p.tolerances.min_zeros
    for zeros, expect in (([100, 90, 80, 40], 4), ([100, 90, 80, chance + 1], 3)):
        pool = CandidatePool(p.search, p.tolerances.thresh, p.tolerances.thresh_pool)
        pool.q, pool.zeros, pool.hits = np.eye(4), np.array(zeros), np.ones(4, dtype=np.int64)
        _, chosen = Selector(p, Budget())._greedy(pool)
        assert sorted(chosen) == list(range(expect))
