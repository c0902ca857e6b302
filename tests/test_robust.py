"""Noise-tolerant attack: the noise estimate, the graded certificate, and every client
variant of the robustness issue (DP-SGD, FedAvg, deeper layers, label-homogeneous
batches) at small sizes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import spear
from gradients import matched_relative_errors
from spear.attack.decompose import factorize, noise_scale, noise_std
from spear.data import load_dataset
from spear.fl import ClientConfig, client_update, layer_input, layer_payload, make_fcnn


def _client_attack(config: ClientConfig, *, b=8, n=200, width=200, depth=4, layer=0, seed=0,
                   positive=False, time_limit=60.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand if positive else torch.randn)(b, n, generator=g)
    y = torch.randint(0, 10, (b,), generator=g)
    model = make_fcnn(n, 10, width=width, depth=depth, seed=seed)
    update = client_update(model, x, y, config)
    p = layer_payload(model, update, layer)
    rec = spear.reconstruct(p.grad_weight, p.grad_bias, b, weight=p.weight, bias=p.bias,
                            time_limit=time_limit, seed=seed)
    truth = layer_input(model, x, layer).detach().double().numpy()
    return rec, truth, p


def test_noise_estimate_matches_planted_noise():
    rng = np.random.default_rng(0)
    m, n, b, sigma = 300, 500, 10, 1e-4
    dZ = rng.standard_normal((m, b)) * (rng.random((m, b)) < 0.5)
    X = rng.standard_normal((b, n))
    gW = dZ @ X + sigma * rng.standard_normal((m, n))
    fac = factorize(np, gW, b, np.float64)
    spectrum = fac.singular_values
    assert noise_std(spectrum, b, m, n) == pytest.approx(sigma, rel=0.15)
    # The floor used for zero tests matches the spread of L q on true zero rows.
    Q = np.linalg.lstsq(fac.L, dZ, rcond=None)[0]
    Q /= np.linalg.norm(Q, axis=0)
    on_zeros = (fac.L @ Q)[dZ == 0]
    scale = noise_scale(spectrum, b, m, n)
    assert 0.2 * scale < np.std(on_zeros) < 1.5 * scale
    # An exact gradient has (almost) no noise to report.
    exact = factorize(np, dZ @ X, b, np.float64).singular_values
    assert noise_std(exact, b, m, n) < 1e-12 * sigma * 1e6


def test_noiseless_stays_exact_and_certified():
    rec, truth, _ = _client_attack(ClientConfig())
    assert rec.complete and rec.certified and rec.certificate.violation_rate == 0
    assert matched_relative_errors(rec.inputs, truth).max() < 1e-4
    assert rec.noise_level < 1e-5 and rec.fit["weight"] < 1e-5 and rec.fit["bias"] < 1e-5


@pytest.mark.parametrize("sigma,max_err", [(1e-5, 2e-2), (1e-4, 1e-1)])
def test_dp_noise_degrades_gracefully(sigma, max_err):
    rec, truth, _ = _client_attack(ClientConfig(dp_clip=1.0, dp_sigma=sigma))
    # Approximate, so never certified; but complete, consistent and close.
    assert rec.complete and rec.certified is False
    assert rec.certificate.consistent and rec.certificate.violation_rate <= 0.02
    assert rec.noise_level > 1e-4 and rec.stats["noisy"]
    err = matched_relative_errors(rec.inputs, truth)
    assert np.median(err) < max_err, err


def test_more_dp_noise_means_larger_error():
    errs = []
    for sigma in (0.0, 1e-5, 1e-4):
        rec, truth, _ = _client_attack(ClientConfig(dp_clip=1.0, dp_sigma=sigma), seed=3)
        assert rec.complete
        errs.append(np.median(matched_relative_errors(rec.inputs, truth)))
    assert errs[0] < errs[1] < errs[2]


def test_fedavg_is_recovered_and_graded_not_certified():
    config = ClientConfig(protocol="fedavg", epochs=5, mini_batch=2, lr=0.01)
    rec, truth, p = _client_attack(config)
    assert rec.complete
    assert matched_relative_errors(rec.inputs, truth).max() < 1e-3
    assert rec.certificate.consistent
    # The graded check tells the true batch from a tampered one.
    wrong = rec.inputs.copy()
    wrong[0] = wrong[0] + wrong[1]
    v_true = spear.verify(p.grad_weight, p.grad_bias, p.weight, p.bias, truth)
    v_wrong = spear.verify(p.grad_weight, p.grad_bias, p.weight, p.bias, wrong)
    assert v_true.consistent and not v_wrong.consistent
    assert v_wrong.violation_rate > 5 * max(v_true.violation_rate, 0.01)


@pytest.mark.parametrize("layer", [1, 2])
def test_deeper_layer_features(layer):
    rec, truth, _ = _client_attack(ClientConfig(), b=6, depth=6, layer=layer)
    assert rec.complete and rec.certified
    assert matched_relative_errors(rec.inputs, truth).max() < 1e-3


def test_label_homogeneous_batch():
    ds = load_dataset("digits")
    x_np, y_np, _ = ds.sample_batch(8, seed=1, label_homogeneous=True)
    assert len(set(y_np.tolist())) == 1
    model = make_fcnn(ds.input_dim, ds.num_classes, width=200, depth=4, seed=0)
    x = torch.from_numpy(x_np)
    update = client_update(model, x, torch.from_numpy(y_np), ClientConfig())
    p = layer_payload(model, update, 0)
    rec = spear.reconstruct(p.grad_weight, p.grad_bias, 8, weight=p.weight, bias=p.bias,
                            time_limit=60)
    assert rec.complete and rec.certified
    assert matched_relative_errors(rec.inputs, x_np.astype(np.float64)).max() < 1e-3
