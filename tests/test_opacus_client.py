"""Opacus DP-SGD clients (``spear[opacus]``): their update is attacked end to end, and the
(epsilon, delta) of Opacus's accountant is reported beside the attack's scores."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("opacus")

from spear.experiment import AttackConfig, Experiment  # noqa: E402
from spear.fl import ClientConfig, client_update, make_fcnn  # noqa: E402
from spear.integrations.opacus import opacus_client_update  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


@pytest.fixture(scope="module")
def batch():
    from spear.data import load_dataset

    ds = load_dataset("digits", None)
    x, y, _ = ds.sample_batch(8, seed=0)
    return make_fcnn(ds.input_dim, ds.num_classes, width=200, depth=3, seed=0), torch.from_numpy(x), torch.from_numpy(y)


def test_without_noise_it_is_the_clipped_gradient(batch):
    """sigma = 0, one full-batch step: Opacus's update is spear's own DP-SGD update (both clip per
    example to C and average), so the two paths agree."""
    model, x, y = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sent = opacus_client_update(model, x, y, ClientConfig(dp_clip=0.5, dp_sigma=0.0))
    hand = client_update(model, x, y, ClientConfig(dp_clip=0.5, dp_sigma=0.0))
    assert sent.steps == 1 and sent.sample_rate == 1.0 and math.isinf(sent.epsilon)
    for k in hand:
        torch.testing.assert_close(sent.update[k], hand[k], rtol=1e-5, atol=1e-7)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())   # model untouched


def test_epsilon_falls_as_noise_grows(batch):
    model, x, y = batch
    eps = [opacus_client_update(model, x, y, ClientConfig(dp_clip=1.0, dp_sigma=s)).epsilon for s in (0.1, 1.0, 4.0)]
    assert all(math.isfinite(e) and e > 0 for e in eps)
    assert eps[0] > eps[1] > eps[2]


def test_opacus_client_attacked_end_to_end():
    """A small-noise Opacus client on digits: the batch comes back (PSNR far above 40 dB), the
    noise is seen (not certified exact), and the finite epsilon that bought nothing is reported."""
    from bench_robust import OpacusClient, attack_batch

    client = OpacusClient()
    cfg = AttackConfig(dataset="digits", batch_size=8, width=200, depth=3, batches=1, time_limit=60.0,
                       dp_clip=1.0, dp_sigma=1e-6)
    row = attack_batch(Experiment(cfg, client=client), 0)
    (epsilon, delta), = client.privacy
    assert math.isfinite(epsilon) and epsilon > 1e6 and delta == 1e-5
    assert row["complete"] and row["psnr"] > 60 and row["good_fraction"] == 1.0
    assert row["noise_level"] > 1e-6              # the DP noise is measured, well above float rounding


def test_clear_errors(batch):
    model, x, y = batch
    with pytest.raises(ValueError, match="dp_clip"):
        opacus_client_update(model, x, y, ClientConfig())
    with pytest.raises(ValueError, match="delta"):
        opacus_client_update(model, x, y, ClientConfig(dp_clip=1.0), delta=2.0)


def test_bench_robust_dp_table_has_epsilon():
    """bench_robust --dp-engine opacus: the DP table shows epsilon beside PSNR (inf without noise)."""
    import bench_robust

    records = bench_robust.run("digits", None, ["dp"], 6, 50, 3, 1, 5.0, quick=True, dp_engine="opacus")
    assert [(r["setting"]["sigma"], r["epsilon"] is None) for r in records] == [(0.0, True), (1e-4, False)]
    assert records[1]["epsilon"] > 1e6 and records[1]["delta"] == 1e-5
    text = bench_robust.tables(records)
    assert "| clip | sigma | epsilon | PSNR dB |" in text and "| 1.0 | 0.0 | inf |" in text
    assert "Opacus clients" in text and "epsilon" not in bench_robust.tables(
        [{k: v for k, v in r.items() if k not in ("epsilon", "delta")} for r in records])
