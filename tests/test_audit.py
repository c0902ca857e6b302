"""``spear audit`` on a model trained and saved with plain torch, as an auditor would run it."""
from __future__ import annotations

import base64
import json
import pickle
import re
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits

from spear.audit import AuditConfig, LayerJob, attack_layer, attackable_layers, load_model
from spear.cli import main
from spear.metrics import feature_metrics

B = 6

MODEL_SOURCE = textwrap.dedent("""
    import torch
    from torch import nn

    class Net(nn.Module):
        # Not a Sequential: the ReLUs are found by forward hooks.
        def __init__(self):
            super().__init__()
            self.fc1, self.act1 = nn.Linear(64, 200), nn.ReLU()
            self.fc2, self.act2 = nn.Linear(200, 200), nn.ReLU()
            self.head = nn.Linear(200, 10)

        def forward(self, x):
            return self.head(self.act2(self.fc2(self.act1(self.fc1(x.flatten(1))))))

    def make_net():
        torch.manual_seed(0)
        return Net()

    def make_tanh_net():
        return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
""")


def _save(state, path):
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A model trained a little on digits, its global weights, one client's batch, its
    gradient and its weights after one local SGD step, in both formats."""
    d = tmp_path_factory.mktemp("audit")
    (d / "auditnet.py").write_text(MODEL_SOURCE)
    net = load_model(f"{d / 'auditnet.py'}:make_net")
    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16.0, dtype=torch.float32), torch.tensor(y)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        F.cross_entropy(net(X[B:]), y[B:]).backward()
        opt.step()
    glob = {k: v.clone() for k, v in net.state_dict().items()}
    xb, yb = X[:B], y[:B]
    net.zero_grad()
    F.cross_entropy(net(xb), yb).backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    with torch.no_grad():
        new = {n: p - 0.1 * p.grad for n, p in net.named_parameters()}
        hidden = net.act1(net.fc1(xb))
    for ext in (".pt", ".safetensors"):
        _save(glob, d / f"global{ext}")
        _save(grads, d / f"grad{ext}")
        _save(new, d / f"new{ext}")
    truth = {"fc1": xb.double().numpy(), "fc2": hidden.double().numpy()}
    return d, truth


def _audit(d, out, *args):
    return main(["audit", "--model", f"{d / 'auditnet.py'}:make_net", "--out", str(out), *args])


def _rel_err(out, record, truth):
    x = np.load(out / record["inputs"])
    return feature_metrics(x, truth[record["name"]])["rel_err_max"]


@pytest.mark.parametrize("ext", [".pt", ".safetensors"])
@pytest.mark.parametrize("kind,update", [("gradient", "grad"), ("weights", "new")])
def test_first_layer_comes_back_exact_and_certified(files, tmp_path, ext, kind, update):
    d, truth = files
    out = tmp_path / "out"
    assert _audit(d, out, "--weights", str(d / f"global{ext}"), "--update", str(d / f"{update}{ext}"),
                  "--update-kind", kind, "--layer", "fc1", "--input-shape", "1,8,8") == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["update_kind"] == kind and s["device"] in ("cpu", "cuda")
    (rec,) = s["layers"]
    assert rec["name"] == "fc1" and rec["batch_size"] == B and rec["complete"] and rec["certified"]
    assert _rel_err(out, rec, truth) < 1e-3
    assert rec["image"] == "layer_fc1.png" and (out / rec["image"]).stat().st_size > 500


def test_every_attackable_layer_of_a_multi_layer_model(files, tmp_path):
    d, truth = files
    out = tmp_path / "out"
    assert _audit(d, out, "--weights", str(d / "global.safetensors"), "--update", str(d / "grad.safetensors"),
                  "--time-limit", "120") == 0
    s = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in s["layers"]] == ["fc1", "fc2"]      # head feeds no ReLU
    for rec in s["layers"]:
        assert rec["complete"] and rec["certified"] and rec["batch_size"] == B
        assert _rel_err(out, rec, truth) < 1e-3
    # Without --input-shape the rows go to a CSV.
    assert s["layers"][1]["rows_csv"] == "layer_fc2.csv"
    assert len((out / "layer_fc2.csv").read_text().splitlines()) == B + 1


def test_many_updates_one_report_each_and_an_index(files, tmp_path):
    d, _ = files
    ups = tmp_path / "updates"
    ups.mkdir()
    for name in ("client_a.pt", "client_b.safetensors"):
        (ups / name).write_bytes((d / ("grad" + name[name.index("."):])).read_bytes())
    (ups / "notes.txt").write_text("ignored: not an update file")
    out = tmp_path / "out"
    assert _audit(d, out, "--weights", str(d / "global.pt"), "--update", str(ups), "--layer", "fc1") == 0
    index = json.loads((out / "index.json").read_text())
    assert [u["report"] for u in index["updates"]] == ["client_a/report.html", "client_b/report.html"]
    assert all(u["certified"] == 1 for u in index["updates"])
    for sub in ("client_a", "client_b"):
        s = json.loads((out / sub / "summary.json").read_text())
        assert s["layers"][0]["certified"] and (out / sub / s["layers"][0]["inputs"]).exists()
    assert "<a href='client_a/report.html'>" in (out / "index.html").read_text()


def test_html_report_shows_pictures_verdicts_and_diagnosis(files, tmp_path):
    d, _ = files
    out = tmp_path / "out"
    # fc2 gets no budget (sampler only, 0 samples): it must come back unrecovered, with a reason.
    assert _audit(d, out, "--weights", str(d / "global.pt"), "--update", str(d / "grad.pt"),
                  "--input-shape", "1,8,8", "--search", "sample", "--max-samples", "0") == 0
    s = json.loads((out / "summary.json").read_text())
    assert [r["complete"] for r in s["layers"]] == [False, False] and s["layers"][0]["inputs"] is None
    assert main(["audit", "--model", f"{d / 'auditnet.py'}:make_net", "--out", str(out), "--overwrite",
                 "--weights", str(d / "global.pt"), "--update", str(d / "grad.pt"), "--input-shape", "1,8,8",
                 "--layer", "fc1"]) == 0
    page = (out / "report.html").read_text()
    png = re.search(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page).group(1)
    assert base64.b64decode(png) == (out / "layer_fc1.png").read_bytes()
    assert "batch recovered exactly and certified" in page and "what it means" in page
    # and the unrecovered run's page: its diagnosis
    out2 = tmp_path / "out2"
    assert _audit(d, out2, "--weights", str(d / "global.pt"), "--update", str(d / "grad.pt"), "--layer", "fc2",
                  "--search", "sample", "--max-samples", "0") == 0
    page = (out2 / "report.html").read_text()
    assert "batch not recovered" in page and "<h3>Diagnosis</h3>" in page
    assert s["layers"][1]["diagnosis"]


def test_malicious_pickle_is_not_run(files, tmp_path, capsys):
    d, _ = files
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"fc1.weight": Evil()}, tmp_path / "evil.pt")
    assert _audit(d, tmp_path / "out", "--weights", str(d / "global.pt"), "--update", str(tmp_path / "evil.pt")) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert err.startswith("spear: error: update") and "refused" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()          # nothing written for a refused input


@pytest.mark.parametrize("make_bad,needle", [
    (lambda d, p: p.write_text("x"), "unsupported file type '.npz'"),
    (lambda d, p: torch.save({k: v for k, v in torch.load(d / "grad.pt").items() if k != "fc2.bias"}, p),
     "'fc2.bias'"),
    (lambda d, p: torch.save({**torch.load(d / "grad.pt"), "fc1.weight": torch.zeros(100, 64)}, p),
     "(100, 64)"),
    (lambda d, p: torch.save(torch.zeros(3), p), "not a state dict"),
    (lambda d, p: p.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!"), "not a valid safetensors file"),
])
def test_bad_updates_are_one_line(files, tmp_path, capsys, make_bad, needle):
    d, _ = files
    path = tmp_path / ("bad.npz" if "npz" in needle else "bad.safetensors" if "safetensors" in needle else "bad.pt")
    make_bad(d, path)
    assert _audit(d, tmp_path / "out", "--weights", str(d / "global.pt"), "--update", str(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("spear: error:") and needle in err and err.count("\n") == 1


def test_model_without_attackable_layer_and_bad_specs(files, tmp_path, capsys):
    d, _ = files
    torch.save(load_model(f"{d / 'auditnet.py'}:make_tanh_net").state_dict(), tmp_path / "tanh.pt")
    assert main(["audit", "--model", f"{d / 'auditnet.py'}:make_tanh_net", "--weights", str(tmp_path / "tanh.pt"),
                 "--update", str(tmp_path / "tanh.pt"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no attackable layer" in err and "Tanh" in err and err.count("\n") == 1
    for spec, needle in [("nomodule_xyz:f", "cannot import"), (f"{d / 'auditnet.py'}:nothing", "no attribute"),
                         ("no_colon", "MODULE:FACTORY")]:
        assert main(["audit", "--model", spec, "--weights", str(d / "global.pt"), "--update",
                     str(d / "grad.pt"), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1
    # Global weights of another model: the missing key is named.
    assert _audit(d, tmp_path / "o", "--weights", str(tmp_path / "tanh.pt"), "--update", str(d / "grad.pt")) == 2
    err = capsys.readouterr().err
    assert "global weights" in err and "'fc1.weight'" in err and err.count("\n") == 1


def test_a_layer_job_is_picklable_and_its_result_json(files):
    d, truth = files
    net = load_model(f"{d / 'auditnet.py'}:make_net")
    net.load_state_dict(torch.load(d / "global.pt"))
    assert attackable_layers(net) == [(0, "fc1"), (1, "fc2")]
    g = torch.load(d / "grad.pt")
    job = LayerJob(update="grad.pt", layer="fc1", grad_weight=g["fc1.weight"].numpy(),
                   grad_bias=g["fc1.bias"].numpy(), weight=net.fc1.weight.detach().numpy(),
                   bias=net.fc1.bias.detach().numpy())
    result = attack_layer(pickle.loads(pickle.dumps(job)))
    again = json.loads(json.dumps(result))
    assert again["certified"] is True and again["batch_size"] == B
    assert feature_metrics(np.array(again["inputs"]), truth["fc1"])["rel_err_max"] < 1e-3


def test_audit_settings_have_one_declaration():
    # The command line's defaults are the dataclass's.
    from spear.cli import build_parser

    args = build_parser().parse_args(["audit", "--model", "m:f", "--weights", "w.pt", "--update", "u.pt"])
    assert args.time_limit == AuditConfig.time_limit and args.update_kind == AuditConfig.update_kind
    assert args.update == ["u.pt"] and args.input_shape is None
