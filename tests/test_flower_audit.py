"""spear.integrations.flower.AuditStrategy (``spear[flower]``): every client's update of every
round is attacked, the results are written, and aggregation is the wrapped strategy's."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

flwr = pytest.importorskip("flwr")

from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays  # noqa: E402
from flwr.server.client_manager import SimpleClientManager  # noqa: E402
from flwr.server.client_proxy import ClientProxy  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402

from spear.integrations.flower import AuditStrategy  # noqa: E402

B, LR, CLIENTS = 6, 0.1, 3


def make_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))


class Proxy(ClientProxy):
    """A client the server can sample; never called (the results are made by hand)."""

    def get_properties(self, *a, **k): raise NotImplementedError
    def get_parameters(self, *a, **k): raise NotImplementedError
    def fit(self, *a, **k): raise NotImplementedError
    def evaluate(self, *a, **k): raise NotImplementedError
    def reconnect(self, *a, **k): raise NotImplementedError


@pytest.fixture(scope="module")
def round_one():
    """The global parameters and 3 clients' FitRes after one local SGD step on their own batch."""
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    net = make_net()
    sent = [v.numpy().copy() for v in net.state_dict().values()]
    proxies, results, batches = [], [], {}
    for c in range(CLIENTS):
        local = make_net()
        xb, yb = X[c * B:(c + 1) * B], y[c * B:(c + 1) * B]
        opt = torch.optim.SGD(local.parameters(), lr=LR)
        F.cross_entropy(local(xb), yb).backward()
        opt.step()
        proxy = Proxy(f"node{c}")
        proxies.append(proxy)
        new = [v.detach().numpy().copy() for v in local.state_dict().values()]
        results.append((proxy, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(new), B, {"partition_id": c})))
        batches[f"node{c}"] = xb.double().numpy()
    return net, sent, proxies, results, batches


def _manager(proxies):
    manager = SimpleClientManager()
    for p in proxies:
        manager.register(p)
    return manager


def _matches(recovered: np.ndarray, truth: np.ndarray) -> bool:
    """Every true input has a recovered row within 1e-4 relative error (any order)."""
    err = np.linalg.norm(recovered[None] - truth[:, None], axis=2) / np.linalg.norm(truth, axis=1)[:, None]
    return recovered.shape == truth.shape and bool((err.min(1) < 1e-4).all())


def test_aggregate_fit_audits_every_client_and_returns_the_wrapped_result(round_one, tmp_path):
    net, sent, proxies, results, batches = round_one
    audit = AuditStrategy(FedAvg(), net, tmp_path / "audit", parallel="thread", round_budget=None,
                          time_limit=60.0)
    audit.configure_fit(1, ndarrays_to_parameters(sent), _manager(proxies))
    got = audit.aggregate_fit(1, results, [])
    want = FedAvg().aggregate_fit(1, results, [])
    assert got[1] == want[1]
    for a, b in zip(parameters_to_ndarrays(got[0]), parameters_to_ndarrays(want[0])):
        np.testing.assert_array_equal(a, b)
    index = audit.close()

    lines = audit.lines()
    assert sorted(line["client"] for line in lines) == sorted(batches)
    for line in lines:
        assert line["round"] == 1 and line["layer"] == "0" and line["certified"] and line["complete"]
        assert line["metrics"]["partition_id"] == int(line["client"][-1])
        assert _matches(np.load(tmp_path / "audit" / line["inputs"]), batches[line["client"]])
        assert (tmp_path / "audit" / line["report"]).is_file()
    assert [(u["layers"], u["certified"]) for u in index["updates"]] == [(1, 1)] * CLIENTS
    assert json.loads((tmp_path / "audit" / "round_001" / "client_node0" / "summary.json").read_text())["layers"]


def test_the_round_does_not_wait_beyond_its_budget(round_one, tmp_path, monkeypatch):
    """An attack that cannot finish (blocked) does not hold aggregate_fit past round_budget; its
    result is written once it finishes, and close() waits for it."""
    import spear.audit as audit_module

    net, sent, proxies, results, _ = round_one
    release = threading.Event()
    real = audit_module.attack_layer

    def blocked(job):
        release.wait(60)
        return real(job)

    monkeypatch.setattr(audit_module, "attack_layer", blocked)
    audit = AuditStrategy(FedAvg(), net, tmp_path / "audit", parallel="thread", round_budget=0.2,
                          time_limit=60.0)
    audit.configure_fit(1, ndarrays_to_parameters(sent), _manager(proxies))
    params, _ = audit.aggregate_fit(1, results, [])
    assert params is not None and audit.lines() == []      # returned while every attack is blocked
    release.set()
    index = audit.close()
    assert len(audit.lines()) == CLIENTS and sum(u["certified"] for u in index["updates"]) == CLIENTS


def test_an_unattackable_update_is_reported_not_fatal(round_one, tmp_path):
    """A client whose update the audit cannot read gets a 'failed' line; the others are audited and
    the aggregation goes on. What the wrapped strategy itself refuses, it still refuses."""
    net, sent, proxies, results, _ = round_one
    odd = (proxies[0], FitRes(Status(Code.OK, ""), results[0][1].parameters, B, {"spear_update": "deltas"}))
    audit = AuditStrategy(FedAvg(), net, tmp_path / "audit", parallel="thread", time_limit=60.0)
    audit.configure_fit(1, ndarrays_to_parameters(sent), _manager(proxies))
    assert audit.aggregate_fit(1, [odd, *results[1:]], [])[0] is not None
    audit.close()
    lines = {line["client"]: line for line in audit.lines()}
    assert lines["node0"]["verdict"] == "failed" and "spear_update" in lines["node0"]["error"]
    assert lines["node1"]["certified"] and lines["node2"]["certified"]

    short = (proxies[0], FitRes(Status(Code.OK, ""), ndarrays_to_parameters(sent[:2]), B, {}))
    audit = AuditStrategy(FedAvg(), net, tmp_path / "again", parallel="thread", time_limit=60.0)
    audit.configure_fit(1, ndarrays_to_parameters(sent), _manager(proxies))
    with pytest.raises(ValueError, match="zip"):              # FedAvg's own error, unchanged
        audit.aggregate_fit(1, [short, *results[1:]], [])
    audit.close()
    assert "2 arrays" in audit.lines()[0]["error"]


def test_a_client_that_sends_its_gradient(round_one, tmp_path):
    """FitRes.metrics["spear_update"] = "gradient": the parameters are attacked as they are."""
    net, sent, proxies, results, batches = round_one
    X, y = load_digits(return_X_y=True)
    local = make_net()
    F.cross_entropy(local(torch.tensor(X[:B] / 16.0, dtype=torch.float32)), torch.tensor(y[:B])).backward()
    grads = [p.grad.numpy().copy() for p in local.parameters()]     # Sequential: state_dict order
    fit = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(grads), B, {"spear_update": "gradient"})
    audit = AuditStrategy(FedAvg(), net, tmp_path / "audit", parallel="thread", time_limit=60.0)
    audit.configure_fit(1, ndarrays_to_parameters(sent), _manager(proxies))
    audit.aggregate_fit(1, [(proxies[0], fit)], [])
    audit.close()
    (line,) = audit.lines()
    assert line["certified"] and _matches(np.load(tmp_path / "audit" / line["inputs"]), batches["node0"])


def test_bad_arguments_are_one_line(round_one, tmp_path):
    net = round_one[0]
    with pytest.raises(ValueError, match="unknown attack option"):
        AuditStrategy(FedAvg(), net, tmp_path / "a", time_limt=3)
    with pytest.raises(ValueError, match="Flower Strategy"):
        AuditStrategy(object(), net, tmp_path / "b")
    with pytest.raises(ValueError, match="no attackable layer"):
        AuditStrategy(FedAvg(), nn.Sequential(nn.Linear(4, 3), nn.Tanh()), tmp_path / "c")


@pytest.mark.slow
def test_flower_simulation_audits_every_client_of_every_round(tmp_path):
    """examples/flower_audit.py: a Flower simulation (Ray backend) of 3 clients x 2 rounds on digits,
    one local SGD step per round: every client's batch is recovered and certified."""
    import sys
    from pathlib import Path

    pytest.importorskip("ray")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import flower_audit

    index = flower_audit.run(3, 2, str(tmp_path / "out"), batch_size=B, time_limit=120.0)
    assert len(index["updates"]) == 6 and index["failed"] == 0
    lines = [json.loads(t) for t in (tmp_path / "out" / "audit.jsonl").read_text().splitlines()]
    assert sorted((line["round"], line["client"]) for line in lines) == [(r, str(c)) for r in (1, 2) for c in range(3)]
    for line in lines:
        assert line["certified"] and line["complete"], line
        x, _ = flower_audit.client_batch(int(line["client"]), 3, line["round"], B)
        assert _matches(np.load(tmp_path / "out" / line["inputs"]), x.double().numpy())
