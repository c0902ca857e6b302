"""Tests of the honest federated client simulation (spear.fl)."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spear.fl import (
    ClientConfig,
    attackable_layer,
    check_followed_by_relu,
    client_update,
    layer_input,
    layer_payload,
    linear_layers,
    make_fcnn,
    minibatch_schedule,
)

N_IN, N_CLS = 12, 4


def _batch(b: int = 6, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, N_IN, generator=g, dtype=dtype)
    y = torch.randint(0, N_CLS, (b,), generator=g)
    return x, y


def _model(seed: int = 0, depth: int = 3, width: int = 16) -> nn.Sequential:
    return make_fcnn(N_IN, N_CLS, width=width, depth=depth, seed=seed, dtype=torch.float64)


def _assert_updates_close(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **tol)


# --- models -------------------------------------------------------------------------------------


def test_make_fcnn_structure():
    model = make_fcnn(10, 3, width=7, depth=4)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Linear, nn.ReLU] * 3 + [nn.Linear]
    shapes = [tuple(layer.weight.shape) for layer in linear_layers(model)]
    assert shapes == [(7, 10), (7, 7), (7, 7), (3, 7)]
    assert all(layer.weight.dtype == torch.float32 for layer in linear_layers(model))
    with pytest.raises(ValueError, match="depth"):
        make_fcnn(10, 3, depth=1)


def test_make_fcnn_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = make_fcnn(10, 3, seed=5), make_fcnn(10, 3, seed=5), make_fcnn(10, 3, seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
        assert not torch.equal(pa, pc)


# --- layers -------------------------------------------------------------------------------------


class _ModuleRelu(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act = nn.Linear(N_IN, 8), nn.Linear(8, N_CLS), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _FunctionalRelu(_ModuleRelu):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


def test_attackable_layer_sequential():
    model = make_fcnn(N_IN, N_CLS, width=8, depth=3)
    assert attackable_layer(model, 1) is linear_layers(model)[1]
    with pytest.raises(ValueError, match=r"out of range.*0\.\.2"):
        attackable_layer(model, 3)
    with pytest.raises(ValueError, match="not followed"):
        attackable_layer(model, 2)  # the output layer
    with pytest.raises(ValueError, match="not followed"):
        attackable_layer(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), 0)


def test_attackable_layer_hooks_on_custom_module():
    x = torch.randn(3, N_IN)
    model = _ModuleRelu()
    assert check_followed_by_relu(model, model.fc1, x)
    assert not check_followed_by_relu(model, model.fc2, x)
    assert attackable_layer(model, 0, example_input=x) is model.fc1
    with pytest.raises(ValueError, match="example_input"):
        attackable_layer(model, 0)  # structure alone is inconclusive

    functional = _FunctionalRelu()
    assert not check_followed_by_relu(functional, functional.fc1, x)
    with pytest.raises(ValueError, match="assume_relu"):
        attackable_layer(functional, 0, example_input=x)
    assert attackable_layer(functional, 0, assume_relu=True) is functional.fc1


def test_layer_input_is_true_deeper_features():
    model = _model(depth=4)
    x, _ = _batch()
    feats = layer_input(model, x, 2)
    with torch.no_grad():
        manual = model[3](model[2](model[1](model[0](x))))
    torch.testing.assert_close(feats, manual)
    assert (feats >= 0).all()  # post-ReLU features
    torch.testing.assert_close(layer_input(model, x, 0), x)


# --- FedSGD -------------------------------------------------------------------------------------


def test_fedsgd_equals_autograd_of_mean_loss():
    model = _model()
    x, y = _batch()
    update = client_update(model, x, y, ClientConfig())
    loss = F.cross_entropy(model(x), y, reduction="sum") / len(y)
    expected = torch.autograd.grad(loss, list(model.parameters()))
    assert list(update) == [n for n, _ in model.named_parameters()]
    for g_upd, g_ref in zip(update.values(), expected):
        torch.testing.assert_close(g_upd, g_ref)
    assert all(p.grad is None for p in model.parameters())


def test_fedsgd_first_layer_low_rank_structure():
    model = _model(width=20)
    b = 5
    x, y = _batch(b)
    update = client_update(model, x, y, ClientConfig())
    payload = layer_payload(model, update, 0)
    gw, gb = torch.from_numpy(payload.grad_weight), torch.from_numpy(payload.grad_bias)

    # dL/dZ of layer 0 (Z = X W^T + b) for the mean loss.
    z = model[0](x)
    z.retain_grad()
    F.cross_entropy(model[1:](z), y).backward()
    dz = z.grad
    torch.testing.assert_close(gw, dz.T @ x)
    torch.testing.assert_close(gb, dz.sum(0))

    assert torch.linalg.matrix_rank(gw).item() <= b
    # Rows of grad_weight lie in the span of the inputs: projecting them out leaves ~0.
    q, _ = torch.linalg.qr(x.T)
    residual = gw - (gw @ q) @ q.T
    assert residual.abs().max() < 1e-12 * max(gw.abs().max().item(), 1.0)


def test_payload_holds_server_weights_and_names():
    model = _model()
    x, y = _batch()
    update = client_update(model, x, y, ClientConfig(protocol="fedavg", epochs=2, mini_batch=2, lr=0.5))
    payload = layer_payload(model, update, 1)
    assert payload.name == "2"
    np.testing.assert_array_equal(payload.weight, model[2].weight.detach().numpy())
    np.testing.assert_array_equal(payload.bias, model[2].bias.detach().numpy())
    np.testing.assert_array_equal(payload.grad_weight, update["2.weight"].numpy())
    assert payload.grad_weight.shape == (16, 16) and payload.grad_bias.shape == (16,)


def test_input_validation():
    model = _model()
    x, y = _batch()
    with pytest.raises(ValueError, match="batch"):
        client_update(model, x, y[:-1])
    with pytest.raises(ValueError, match="int64"):
        client_update(model, x, y.int())
    with pytest.raises(ValueError, match=r"\(batch, features\)"):
        client_update(model, x[0], y)
    with pytest.raises(ValueError, match="dtype"):
        client_update(model, x.float(), y)
    with pytest.raises(ValueError, match="labels"):
        client_update(model, x, y + N_CLS)
    with pytest.raises(ValueError, match="protocol"):
        ClientConfig(protocol="fedprox")


# --- FedAvg -------------------------------------------------------------------------------------


def test_fedavg_single_full_step_equals_fedsgd():
    model = _model()
    x, y = _batch()
    fedsgd = client_update(model, x, y, ClientConfig())
    fedavg = client_update(model, x, y, ClientConfig(protocol="fedavg", epochs=1, lr=0.3))
    _assert_updates_close(fedavg, fedsgd)


def test_fedavg_matches_manual_sgd_and_leaves_model_unchanged():
    model = _model()
    before = copy.deepcopy(model.state_dict())
    x, y = _batch(b=7)
    cfg = ClientConfig(protocol="fedavg", epochs=2, mini_batch=3, lr=0.2, seed=3)
    update = client_update(model, x, y, cfg)

    steps = minibatch_schedule(len(x), cfg)
    assert len(steps) == 2 * 3 and [len(s) for s in steps[:3]] == [3, 3, 1]
    for epoch in range(2):
        assert sorted(torch.cat(steps[3 * epoch : 3 * epoch + 3]).tolist()) == list(range(7))

    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(ref.parameters(), lr=cfg.lr)
    for idx in steps:
        opt.zero_grad()
        F.cross_entropy(ref(x[idx]), y[idx]).backward()
        opt.step()
    for name, p in ref.named_parameters():
        expected = (before[name] - p.detach()) / (cfg.lr * len(steps))
        torch.testing.assert_close(update[name], expected, rtol=1e-9, atol=1e-12)

    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    fedsgd = client_update(model, x, y, ClientConfig())
    assert not torch.allclose(update["0.weight"], fedsgd["0.weight"], rtol=1e-3, atol=1e-6)


def test_fedavg_deterministic_in_seed():
    model = _model()
    x, y = _batch(b=8)
    cfg = ClientConfig(protocol="fedavg", epochs=2, mini_batch=3, lr=0.5, seed=1)
    _assert_updates_close(client_update(model, x, y, cfg), client_update(model, x, y, cfg), rtol=0, atol=0)
    other = client_update(model, x, y, ClientConfig(protocol="fedavg", epochs=2, mini_batch=3, lr=0.5, seed=2))
    assert not torch.allclose(other["0.weight"], client_update(model, x, y, cfg)["0.weight"])


# --- DP-SGD -------------------------------------------------------------------------------------


def _global_norm(update: dict) -> float:
    return float(torch.sqrt(sum(v.pow(2).sum() for v in update.values())))


def test_dp_without_noise_and_huge_clip_equals_fedsgd():
    model = _model()
    x, y = _batch()
    plain = client_update(model, x, y, ClientConfig())
    _assert_updates_close(client_update(model, x, y, ClientConfig(dp_clip=1e9)), plain)
    avg_cfg = ClientConfig(protocol="fedavg", epochs=2, mini_batch=2, lr=0.3)
    _assert_updates_close(
        client_update(model, x, y, dataclasses.replace(avg_cfg, dp_clip=1e9)),
        client_update(model, x, y, avg_cfg),
    )


def test_dp_clipping_bounds_each_example():
    model = _model()
    x, y = _batch(b=6)
    clip = 1e-3
    assert _global_norm(client_update(model, x[:1], y[:1], ClientConfig())) > clip
    # One example: its clipped gradient has norm exactly clip.
    single = client_update(model, x[:1], y[:1], ClientConfig(dp_clip=clip))
    assert _global_norm(single) == pytest.approx(clip, rel=1e-6)
    # A batch: the mean of clipped gradients has norm <= clip, and equals the mean of singles.
    batch = client_update(model, x, y, ClientConfig(dp_clip=clip))
    assert _global_norm(batch) <= clip * (1 + 1e-9)
    singles = [client_update(model, x[i : i + 1], y[i : i + 1], ClientConfig(dp_clip=clip)) for i in range(6)]
    for name in batch:
        torch.testing.assert_close(batch[name], sum(s[name] for s in singles) / 6)


def test_dp_noise_seeded_with_right_std():
    model = make_fcnn(N_IN, N_CLS, width=64, depth=3, dtype=torch.float64)
    x, y = _batch(b=4)
    clip, sigma = 0.5, 2.0
    clean = client_update(model, x, y, ClientConfig(dp_clip=clip))
    noisy = client_update(model, x, y, ClientConfig(dp_clip=clip, dp_sigma=sigma, seed=7))
    again = client_update(model, x, y, ClientConfig(dp_clip=clip, dp_sigma=sigma, seed=7))
    other = client_update(model, x, y, ClientConfig(dp_clip=clip, dp_sigma=sigma, seed=8))
    _assert_updates_close(noisy, again, rtol=0, atol=0)
    assert not torch.allclose(noisy["0.weight"], other["0.weight"])

    noise = torch.cat([(noisy[k] - clean[k]).flatten() for k in noisy])
    expected_std = sigma * clip / len(x)
    assert noise.numel() > 5000
    assert noise.std().item() == pytest.approx(expected_std, rel=0.05)
    assert abs(noise.mean().item()) < 5 * expected_std / noise.numel() ** 0.5
