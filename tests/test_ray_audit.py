"""``spear audit --ray``: one Ray task per (update, layer); the same reports as the serial run."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from spear.cli import main

MODEL_SOURCE = textwrap.dedent("""
    import torch
    from torch import nn

    def make_net():
        torch.manual_seed(1)
        return nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10))
""")
UPDATES, B = 4, 5
VOLATILE = {"seconds", "seconds_total", "config"}   # wall-clock figures, and --ray itself


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Global weights and 4 clients' FedSGD gradients on digits, as safetensors."""
    d = tmp_path_factory.mktemp("ray_audit")
    (d / "raynet.py").write_text(MODEL_SOURCE)
    namespace: dict = {}
    exec(MODEL_SOURCE, namespace)
    net = namespace["make_net"]()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "global.safetensors"))
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    (d / "updates").mkdir()
    for c in range(UPDATES):
        net.zero_grad()
        F.cross_entropy(net(X[c * B:(c + 1) * B]), y[c * B:(c + 1) * B]).backward()
        save_file({n: p.grad.clone() for n, p in net.named_parameters()}, str(d / "updates" / f"client{c}.safetensors"))
    return d


def _audit(d, out, *extra):
    assert main(["audit", "--model", f"{d / 'raynet.py'}:make_net", "--weights", str(d / "global.safetensors"),
                 "--update", str(d / "updates"), "--time-limit", "120", "--out", str(out), *extra]) == 0
    index = json.loads((out / "index.json").read_text())
    summaries = {row["update"]: json.loads((out / row["summary"]).read_text()) for row in index["updates"]}
    return index, summaries


def _stable(layer: dict) -> dict:
    return {k: v for k, v in layer.items() if k not in VOLATILE}


def test_ray_audit_equals_serial(folder, tmp_path):
    pytest.importorskip("ray")
    serial_index, serial = _audit(folder, tmp_path / "serial")
    ray_index, on_ray = _audit(folder, tmp_path / "ray", "--ray")
    assert serial_index == ray_index
    assert len(serial) == UPDATES and ray_index["failed"] == 0
    for update, summary in serial.items():
        assert [_stable(r) for r in summary["layers"]] == [_stable(r) for r in on_ray[update]["layers"]]
        assert summary["layers"][0]["certified"]
        a = np.load(tmp_path / "serial" / f"client{update[-13]}" / summary["layers"][0]["inputs"])
        b = np.load(tmp_path / "ray" / f"client{update[-13]}" / on_ray[update]["layers"][0]["inputs"])
        np.testing.assert_array_equal(a, b)


def test_failed_task_is_in_the_index(folder, tmp_path, monkeypatch):
    """A job that raises is a 'failed' record in the index, and the other updates keep their results."""
    import spear.audit as audit

    real = audit.attack_layer

    def flaky(job):
        if job.update.endswith("client2.safetensors"):
            raise RuntimeError("simulated worker failure")
        return real(job)

    monkeypatch.setattr(audit, "attack_layer", flaky)
    index, summaries = _audit(folder, tmp_path / "out")
    assert index["failed"] == 1
    bad = [row for row in index["updates"] if row["failed"]]
    assert len(bad) == 1 and bad[0]["update"].endswith("client2.safetensors")
    assert "simulated worker failure" in bad[0]["failed"][0]["error"]
    assert sum(row["certified"] for row in index["updates"]) == UPDATES - 1
    assert "FAILED" in (tmp_path / "out" / "index.html").read_text()


def test_ray_without_ray_installed_is_one_line(folder, tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)          # import ray now fails, as when not installed
    assert main(["audit", "--model", f"{folder / 'raynet.py'}:make_net", "--update", str(folder / "updates"),
                 "--weights", str(folder / "global.safetensors"), "--out", str(tmp_path / "out"), "--ray"]) == 2
    assert not (tmp_path / "out").exists()                  # refused before anything ran
    assert 'pip install -c constraints.txt ".[ray]"' in capsys.readouterr().err


def test_ray_flag_takes_an_optional_address():
    from spear.audit import AuditConfig
    from spear.cli import build_parser
    from spear.settings import from_args

    base = ["audit", "--model", "m:f", "--weights", "g.pt", "--update", "u.pt"]
    parse = build_parser().parse_args
    assert from_args(AuditConfig, parse(base)).ray is None
    assert from_args(AuditConfig, parse(base + ["--ray"])).ray == "local"
    assert from_args(AuditConfig, parse(base + ["--ray", "--layer", "fc1"])).ray == "local"
    assert from_args(AuditConfig, parse(base + ["--ray", "10.0.0.1:6379"])).ray == "10.0.0.1:6379"
