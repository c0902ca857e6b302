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


def test_a_steered_round_finds_the_few_missing_columns_at_once(case):
    """With all but 3 columns known, one steered round proposes all 3 (the constrained
    deflation, CONSTRAINED_MAX_MISSING); the known ones are not proposed again."""
    g, p, Qtrue = case
    missing = [5, 17, 40]
    known = np.delete(Qtrue, missing, axis=0)
    q = Screened(rounds=1).propose(p, known, Budget(), seed=1).q
    hit = np.abs(q @ Qtrue.T) > EXACT_COS
    assert set(np.flatnonzero(hit.any(axis=0))) >= set(missing)
    assert not hit[:, np.setdiff1d(np.arange(p.b), missing)].any()


def test_screened_rounds_use_the_fast_recipe():
    opts = Screened().round_options(256, 0)
    assert opts["adm_dtype"] == np.float32 and opts["refine"] == "trimmed"
    assert [lam for _, lam in opts["adm_schedule"]] == [2.0, 1.0, 0.5, 0.25]
    assert all(steps >= 50 for steps, _ in opts["adm_schedule"])
    steered = Screened().round_options(256, 230)
    assert steered["num_starts"] == 2 * 256 and steered["adm_schedule"][-1][1] == 0.1
    assert steered["project_starts"] and not opts.get("project_starts")  # nothing known yet


def test_steered_starts_leave_the_known_columns_out(case, monkeypatch):
    """Projected starts are orthogonal to every known column (whitened coordinates), and
    with a third of the batch missing (more than the constrained deflation takes) one
    steered round proposes nearly all of it (b = 256, 29 missing: all 29 in one round,
    10 without the projection)."""
    from spear.attack import dictionary as d

    g, p, Qtrue = case
    missing = np.arange(0, p.b, 3)
    known = np.delete(Qtrue, missing, axis=0)
    seen = {}
    adm = d.adm

    def first_adm(xp, U, P, *args, **kw):
        seen.setdefault("starts", P.copy())
        return adm(xp, U, P, *args, **kw)

    monkeypatch.setattr(d, "adm", first_adm)
    src = Screened(rounds=1)
    q = src.propose(p, p.to_factor(p.to_search(known)), Budget(), seed=1).q
    hit = np.abs(q @ Qtrue.T) > EXACT_COS
    assert hit[:, missing].any(axis=0).sum() >= 0.8 * len(missing)
    # Starts against the known columns in the same whitened coordinates.
    basis = src.bases[1 % len(src.bases)]
    A = p.search * (p.noise_live[:, None] if basis != "whitened" else 1.0)
    norms = (np.linalg.norm(A, axis=1) if basis == "unit" else
             np.full(len(A), np.median(np.linalg.norm(A, axis=1))))
    Ro = np.linalg.qr(A / norms[:, None])[1]
    Pk = Ro @ p.to_search(known).T
    S = seen["starts"].astype(np.float64)
    cos = np.abs((Pk / np.linalg.norm(Pk, axis=0)).T @ (S / np.linalg.norm(S, axis=0)))
    assert cos.max() < 1e-4


def test_adm_keeps_float32_and_matches_float64():
    """float32 ADM stays float32 (a numpy float64 threshold used to promote it) and lands
    where float64 does."""
    from spear.attack.dictionary import adm

    rng = np.random.default_rng(0)
    U = np.linalg.qr(rng.standard_normal((300, 12)))[0]
    P = U[:40].T / np.linalg.norm(U[:40].T, axis=0)
    a = adm(np, U.astype(np.float32), P.astype(np.float32), 30, np.float64(0.5) / np.sqrt(300))
    b = adm(np, U, P, 30, 0.5 / np.sqrt(300))
    assert a.dtype == np.float32
    assert np.abs(np.abs((a.astype(np.float64) * b).sum(axis=0)) - 1).max() < 1e-4


def test_weighted_grams_and_trimmed_refine():
    from spear.attack import dictionary as D

    rng = np.random.default_rng(1)
    m, b = 400, 10
    dZ = rng.standard_normal((m, b)) * (rng.random((m, b)) < 0.5)   # half the entries zero
    dZ = dZ[np.abs(dZ).sum(axis=1) > 0]                              # no dead rows
    m = len(dZ)
    L = dZ @ np.linalg.inv(rng.standard_normal((b, b)))
    W = rng.random((m, 3))
    G = D._weighted_grams(np, L, W)
    assert np.allclose(G[2], L.T @ (W[:, 2:3] * L))
    Ln = L / np.linalg.norm(L, axis=1, keepdims=True)
    U, Ro = np.linalg.qr(Ln)
    wh = D._Whitened(Ln=Ln, tr=np.full(m, 1e-10), U=U, Ro=Ro)
    Qtrue = np.linalg.lstsq(L, dZ, rcond=None)[0]
    P = Ro @ Qtrue[:, :4]
    P = P / np.linalg.norm(P, axis=0) + 0.02 * rng.standard_normal((b, 4))   # near columns
    R = D.trimmed_refine(np, wh, P / np.linalg.norm(P, axis=0))
    T = Ro @ Qtrue[:, :4]
    cos = np.abs((R / np.linalg.norm(R, axis=0)).T @ (T / np.linalg.norm(T, axis=0)))
    assert np.diag(cos).min() > 1 - 1e-9                 # exact, not merely closer


def test_adm_starts_are_cut_to_the_time_left():
    """ADM_TIME_SHARE of the time left, timed on a probe: b = 512, m = 8000 on one core
    would otherwise spend the whole round in ADM and propose nothing."""
    from spear.attack import dictionary as d

    class Clock:
        """The probe's 256 starts x 3 steps take 0.768 s: 1 ms per start and step."""
        def __init__(self):
            self.t = [0.0, 0.768]

        def __call__(self):
            return self.t.pop(0)

    class Tight:
        clock = Clock()

        def remaining(self):
            return 100.0

    rng = np.random.default_rng(0)
    U = np.linalg.qr(rng.standard_normal((300, 20)))[0].astype(np.float32)
    P = rng.standard_normal((20, 2000)).astype(np.float32)
    # 100 steps at 1 ms per start: 0.1 s a start, half of 100 s -> 500 starts.
    got = d._fit_starts(np, U, P, 100, Tight())
    assert got.shape == (20, 500) and np.array_equal(got, P[:, :500])
    assert d._fit_starts(np, U, P, 100, None) is P                 # no deadline: all
    assert d._fit_starts(np, U, P[:, :400], 100, Tight()) .shape[1] == 400   # probe ~ the work
