"""The screened dictionary source (spear.attack.screened): its proposals are true columns
of Q that the pool accepts, it is deterministic, and it plugs into reconstruct."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import spear
from gradients import first_layer_gradients, matched_relative_errors
from spear.attack import prepare
from spear.attack.budget import Budget
from spear.attack.screened import Screened, refine_count
from spear.attack.select import CandidatePool, greedy_independent
from spear.attack.sources import AUTO_SCREENED_FROM, Dictionary, Sampler, sources_for

#: A proposal counts as a true column when |cos| exceeds this.
EXACT_COS = 1 - 1e-6


@pytest.fixture(scope="module")
def case():
    b, m = 48, 1000
    g = first_layer_gradients(b, width=m, n=784, dtype=torch.float32, seed=4)
    p = prepare(g.grad_weight, g.grad_bias, b, weight=g.weight, bias=g.bias, device="cpu")
    dZ = g.grad_weight.double().numpy() @ np.linalg.pinv(g.inputs)
    Qtrue = np.linalg.lstsq(p.L_live, dZ[p.live], rcond=None)[0]
    return g, p, (Qtrue / np.linalg.norm(Qtrue, axis=0)).T


def test_first_round_proposes_true_columns_the_pool_accepts(case):
    g, p, Qtrue = case
    q = Screened().propose(p, np.empty((0, p.b)), Budget(), seed=0).q
    assert q.ndim == 2 and q.shape[1] == p.b and len(q) <= 2 * p.b
    true = np.abs(q @ Qtrue.T).max(axis=1) > EXACT_COS
    assert true.mean() >= 0.9                          # nearly every proposal is exact
    assert true.sum() >= 0.75 * p.b                    # most of the batch in one round
    t = p.tolerances
    pool = CandidatePool(p.search, t.thresh, t.thresh_pool)
    assert pool.add(p.to_search(q)) >= true.sum()      # each true column survives polishing
    chosen = greedy_independent(pool.q, pool.order(), p.b)
    assert len(chosen) >= true.sum()


def test_same_seed_same_proposals():
    g = first_layer_gradients(24, width=400, n=784, dtype=torch.float32, seed=2)
    p = prepare(g.grad_weight, g.grad_bias, 24, weight=g.weight, bias=g.bias, device="cpu")
    known = np.empty((0, p.b))
    a = Screened().propose(p, known, Budget(), seed=3).q
    b = Screened().propose(p, known, Budget(), seed=3).q
    assert len(a) and np.array_equal(a, b)
    # A steered round (known directions given) is deterministic too.
    k1 = Screened(rounds=1).propose(p, a[:12], Budget(), seed=3).q
    k2 = Screened(rounds=1).propose(p, a[:12], Budget(), seed=3).q
    assert np.array_equal(k1, k2)


def test_a_steered_round_refines_about_twice_the_missing_columns():
    assert refine_count(256, None) == 256
    assert refine_count(256, 30) == 60
    assert refine_count(256, 1) == refine_count(8, None) == 16


@pytest.mark.parametrize("method", ["screened", "list"])
def test_plugs_into_reconstruct_exact_and_certified(method):
    b, m = 40, 1000
    g = first_layer_gradients(b, width=m, n=784, dtype=torch.float32, seed=9)
    rec = spear.reconstruct(g.grad_weight, g.grad_bias, b, weight=g.weight, bias=g.bias,
                            device="cpu", seed=0,
                            method="screened" if method == "screened" else [Screened(), Sampler()])
    assert rec.certified
    assert matched_relative_errors(rec.inputs, g.inputs).max() < 1e-3
    assert rec.stats["rounds"].get("screened", 0) >= 1


def test_auto_chooses_by_batch_size():
    small = sources_for("auto", AUTO_SCREENED_FROM - 1)
    large = sources_for("auto", AUTO_SCREENED_FROM)
    assert isinstance(small[0], Dictionary) and isinstance(small[-1], Sampler)
    assert [type(s) for s in large] == [Screened]        # the sampler is hopeless there
    assert isinstance(sources_for("auto")[0], Dictionary)     # b unknown: the small-batch choice
