"""The attack core's stages (prepare / search / finish): pluggable direction sources, one
budget with an injectable clock, the result's factor, and the structure rules (short
functions, every tolerance constant in one module)."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

import spear
from gradients import first_layer_gradients, matched_relative_errors
from spear.attack import Budget, Proposal, Sampler, prepare
from spear.attack.search import search
from spear.attack.sources import sources_for

ATTACK = Path(spear.__file__).parent / "attack"


def _true_directions(problem, g):
    """Unit columns of the true Q (rows) in the coordinates of the problem's live rows."""
    X = g.inputs
    dZ = problem.gW @ X.T @ np.linalg.inv(X @ X.T)
    Q = np.linalg.lstsq(problem.L_live, dZ[problem.live], rcond=None)[0]
    return (Q / np.linalg.norm(Q, axis=0)).T


@dataclass
class Oracle:
    """A source that knows the answer, one direction per turn (and records its calls)."""

    directions: np.ndarray
    name: str = "oracle"
    exhausted: bool = False
    calls: list = field(default_factory=list)

    def propose(self, problem, known, budget, seed):
        self.calls.append(len(known))
        k = len(self.calls) - 1
        return Proposal(self.directions[k:k + 1] if k < len(self.directions) else np.empty((0, problem.b)))

    def observe(self, added):
        self.exhausted = len(self.calls) >= len(self.directions)


@dataclass
class Idle:
    """A source that finds nothing and moves an injected clock forward by ``step``."""

    now: list
    step: float
    name: str = "idle"
    exhausted: bool = False
    turns: int = 0

    def propose(self, problem, known, budget, seed):
        self.turns += 1
        self.now[0] += self.step
        return Proposal(np.empty((0, problem.b)))

    def observe(self, added):
        pass


@pytest.fixture(scope="module")
def layer():
    return first_layer_gradients(10, width=200, dtype=torch.float64, seed=21)


def test_a_new_source_plugs_in_without_touching_the_loop(layer):
    p = prepare(layer.grad_weight, layer.grad_bias, 10, weight=layer.weight, bias=layer.bias)
    oracle = Oracle(_true_directions(p, layer))
    rec = spear.reconstruct(layer.grad_weight, layer.grad_bias, 10, weight=layer.weight,
                            bias=layer.bias, method=[oracle])
    assert rec.complete and rec.certified
    assert matched_relative_errors(rec.inputs, layer.inputs).max() < 1e-8
    # One direction per turn, each turn sees the selection so far.
    assert oracle.calls == list(range(10))
    assert rec.stats["method"] == ["oracle"] and rec.stats["rounds"] == {"oracle": 10}
    assert rec.stats["samples"] == 0


def test_sources_take_turns_in_order_and_the_sampler_finishes(layer):
    # The oracle knows 7 of 10 columns; the sampler (listed second) must find the rest.
    p = prepare(layer.grad_weight, layer.grad_bias, 10, weight=layer.weight, bias=layer.bias)
    oracle = Oracle(_true_directions(p, layer)[:7])
    rec = spear.reconstruct(layer.grad_weight, layer.grad_bias, 10, weight=layer.weight,
                            bias=layer.bias, method=[oracle, Sampler()], seed=3)
    assert rec.certified
    # First round: the oracle's direction ends the round (the sampler waits); later
    # rounds: the oracle, then the sampler, until the selection is certified.
    turns = rec.stats["rounds"]
    assert turns["sample"] >= 1 and turns["sample"] == turns["oracle"] - 1
    assert rec.stats["samples"] > 0


def test_bad_method_is_a_clear_error(layer):
    with pytest.raises(ValueError, match="method"):
        sources_for("magic")
    with pytest.raises(ValueError, match="direction sources"):
        sources_for([object()])
    with pytest.raises(ValueError, match="direction sources"):
        spear.reconstruct(layer.grad_weight, layer.grad_bias, method=[])


def test_the_budget_stops_the_search_by_its_clock(layer):
    # An injected clock: each idle turn costs 0.4 "seconds"; with a 1 s budget the third
    # turn ends past the deadline, so exactly three turns run, whatever the machine's load.
    now = [0.0]
    idle = Idle(now, 0.4)
    budget = Budget(time_limit=1.0, clock=lambda: now[0])
    p = prepare(layer.grad_weight, layer.grad_bias, 10, weight=layer.weight, bias=layer.bias)
    out = search(p, [idle], budget)
    assert idle.turns == 3 and out.selection is None and out.found == 0
    assert budget.expired() and budget.remaining() == 0.0


def test_the_sample_budget_is_exact(layer):
    rec = spear.reconstruct(layer.grad_weight, layer.grad_bias, 10, weight=layer.weight,
                            bias=layer.bias, method="sample", max_samples=5000)
    assert rec.stats["samples"] == 5000


@pytest.mark.parametrize("bad", [dict(max_samples=-1), dict(max_samples=2.5),
                                 dict(max_samples=True), dict(time_limit=0), dict(time_limit=-1)])
def test_bad_budget_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="max_samples|time_limit"):
        Budget(**bad)


def test_the_result_carries_what_its_directions_mean(layer):
    rec = spear.reconstruct(layer.grad_weight, layer.grad_bias, 10, weight=layer.weight,
                            bias=layer.bias)
    f = rec.factor
    assert f.L.shape == (200, 10) and f.R.shape == (10, 784) and f.batch_size == 10
    assert not f.L[~f.live].any()
    # Inputs from the directions alone: scales from grad_bias, then X = Q^-1 R.
    Q = rec.directions
    c = np.linalg.lstsq(f.L @ Q, layer.grad_bias.double().numpy(), rcond=None)[0]
    X = np.linalg.solve(Q * c[None, :], f.R)
    assert matched_relative_errors(X, layer.inputs).max() < 1e-8
    assert np.allclose(f.spectrum[:10], np.linalg.eigvalsh(f.R @ f.R.T)[::-1], rtol=1e-8)   # R = S^1/2 V^T


def test_prepare_holds_one_tolerance_policy(layer):
    from spear.attack.tolerance import POOL_SIGMAS, SAMPLER_SIGMAS

    p = prepare(layer.grad_weight, layer.grad_bias, 10)
    t = p.tolerances
    # The search runs on the whitened factor: constant thresholds in noise sigmas.
    assert np.all(t.thresh == SAMPLER_SIGMAS) and np.all(t.thresh_pool == POOL_SIGMAS)
    assert t.sampler_sigmas == SAMPLER_SIGMAS and not t.noisy
    assert p.search.shape == (p.live.sum(), 10) and t.min_zeros >= 9
    # Directions map between the search's coordinates and L's and back.
    Q = np.random.default_rng(0).standard_normal((3, 10))
    Q /= np.linalg.norm(Q, axis=1, keepdims=True)
    assert np.allclose(p.to_factor(p.to_search(Q)), Q)
    assert p.exact                                # exact float64 gradient
    assert p.certifier is None                    # no layer given, nothing to certify with


def _functions(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


def test_no_attack_function_is_longer_than_80_lines():
    long = [(p.name, name, n) for p in ATTACK.glob("*.py") for name, n in _functions(p) if n > 80]
    assert not long


#: Words that name a tolerance; a module-level constant named with one lives in tolerance.py.
_TOLERANCE_WORDS = ("TOL", "COS", "SIGMAS", "RATE", "MARGIN", "FLOOR", "TAIL", "GAP", "REL",
                    "LEVEL")


def test_every_tolerance_constant_is_defined_once_in_the_policy():
    stray = []
    for path in ATTACK.glob("*.py"):
        if path.name == "tolerance.py":
            continue
        for node in ast.parse(path.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else (
                [node.target] if isinstance(node, ast.AnnAssign) else [])
            for t in targets:
                names = [e.id for e in (t.elts if isinstance(t, ast.Tuple) else [t])
                         if isinstance(e, ast.Name)]
                stray += [(path.name, n) for n in names
                          if n.isupper() and any(w in n for w in _TOLERANCE_WORDS)]
    assert not stray


def test_a_rejected_set_returns_the_inputs_its_certificate_clears(layer):
    """A wrong column q_j + c q_k corrupts input k only (row k of Q^-1): the result is
    'partial' with the other b - 2 inputs, each exact, never 'complete'."""
    from spear.attack.budget import Budget as _Budget
    from spear.attack.finish import finish
    from spear.attack.search import SearchOutcome, Selection

    g = layer
    p = prepare(g.grad_weight, g.grad_bias, 10, weight=g.weight, bias=g.bias)
    X = g.inputs
    dZ = g.grad_weight.double().numpy() @ X.T @ np.linalg.inv(X @ X.T)
    Q = np.linalg.lstsq(p.L, dZ, rcond=None)[0]
    Q[:, 2] += 0.5 * Q[:, 5]                                 # column 2 mixes in column 5
    Xr = np.linalg.solve(Q, p.R)
    cert = p.certifier(Q)
    assert not cert.certified and cert.per_column[2] > 0 and cert.per_column[5] > 0
    outcome = SearchOutcome(Selection(Q, Xr, cert), Q / np.linalg.norm(Q, axis=0), found=p.b,
                            pool_size=p.b, candidates=p.b)
    rec = finish(p, outcome, _Budget(), {})
    assert rec.verdict == "partial" and not rec.complete and not rec.certified
    assert len(rec.inputs) == p.b - 2 and rec.input_status == ["consistent"] * (p.b - 2)
    assert matched_relative_errors(rec.inputs, np.delete(X, 5, axis=0)).max() < 1e-5
    assert "rejected" in rec.diagnosis and f"{p.b - 2} of {p.b} inputs" in rec.diagnosis


def test_an_input_rounding_leaves_imprecise_is_not_called_certified():
    from spear.attack.certify import Certificate
    from spear.attack.finish import _input_status

    cert = Certificate(certified=True, violations=0, per_column=np.zeros(3, dtype=int),
                       checked_fraction=1.0, input_errors=np.array([1e-8, 2e-2, 5e-4]))
    assert _input_status("certified", cert, 3) == ["certified", "consistent", "certified"]


def test_a_cuda_backend_takes_host_arrays_back_as_they_are():
    """On a GPU the sampler returns numpy arrays for the host-side search factor; the
    H100 run (2026-11-24) crashed in ``to_numpy`` calling ``.get()`` on one."""
    from spear.attack.backend import Backend

    class Device:                       # what CuPy arrays offer: a .get() to the host
        def get(self):
            return np.arange(3.0)

    be = Backend("cuda", np)
    a = np.ones((2, 3))
    assert be.to_numpy(a) is a
    assert np.array_equal(be.to_numpy(Device()), np.arange(3.0))
    assert np.array_equal(be.to_numpy([1.0, 2.0]), [1.0, 2.0])
