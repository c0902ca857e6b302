"""End-to-end exact reconstruction from torch-computed gradients, the certificate, batch
size inference and the error for every kind of bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import spear
from gradients import first_layer_gradients, matched_relative_errors

TOL = {torch.float32: 1e-4, torch.float64: 1e-8}


def _case(b, positive):
    # All-positive inputs at b = 16 need ~1e8 samples on two cores: run on request.
    if positive and b == 16:
        return pytest.param(b, positive, marks=pytest.mark.slow)
    return (b, positive)


@pytest.mark.parametrize("width", [200, 1000])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("b,positive", [_case(b, p) for p in (False, True) for b in (1, 2, 4, 8, 12, 16)])
def test_exact_reconstruction(b, positive, dtype, width, request):
    if positive and b == 16 and width == 200 and dtype == torch.float64:
        # Measured: 130M samples in 120 s and 300 s runs end with 16 directions but a
        # mixture in place of a column (the sparsest-missing column has too few zero rows
        # for 15 random rows to land in them); float32 and width 1000 pass.
        request.applymarker(pytest.mark.xfail(reason="out of reach in 300 s on 2 cores",
                                              strict=False))
    g = first_layer_gradients(b, width=width, positive=positive, dtype=dtype, seed=b)
    rec = spear.reconstruct(g.grad_weight, g.grad_bias, b, weight=g.weight, bias=g.bias,
                            time_limit=300)
    assert rec.complete and rec.certified, rec.stats
    assert rec.inputs.shape == g.inputs.shape
    err = matched_relative_errors(rec.inputs, g.inputs)
    assert err.max() < TOL[dtype], err
    assert rec.stats["backend"] == "cpu" and rec.stats["directions_found"] == b


def test_headline_b16_within_a_minute_budget():
    # Measured ~1.4 s on two cores; the budget (not a wall-clock assertion) says "a minute".
    g = first_layer_gradients(16, width=200, n=784, depth=3, dtype=torch.float32, seed=123)
    rec = spear.reconstruct(g.grad_weight, g.grad_bias, weight=g.weight, bias=g.bias,
                            time_limit=60)
    assert rec.complete and rec.certified and rec.batch_size == 16
    assert matched_relative_errors(rec.inputs, g.inputs).max() < 1e-4


def test_without_layer_parameters_only_by_opt_in_and_never_complete():
    g = first_layer_gradients(6, dtype=torch.float64, seed=2)
    with pytest.raises(ValueError, match="unverified=True"):
        spear.reconstruct(g.grad_weight.numpy(), g.grad_bias.numpy())
    rec = spear.reconstruct(g.grad_weight.numpy(), g.grad_bias.numpy(), unverified=True)
    assert not rec.complete and rec.verdict == "unverified" and rec.certified is None
    assert rec.certificate is None and rec.input_status == ["unverified"] * 6
    assert "nothing was checked" in rec.diagnosis
    # Here the unverified answer happens to be right (zero-mean inputs, random init) ...
    assert matched_relative_errors(rec.inputs, g.inputs).max() < 1e-8


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_positive_without_layer_is_never_called_complete(seed):
    # ... but not here (784-500-ReLU-10, inputs in [0, 1], b = 16): measured wrong in 6 of
    # 6 seeds with fit ~1e-7. Unverified, it must never read as complete; with the layer,
    # whatever comes back complete must be right.
    g = first_layer_gradients(16, width=500, depth=2, positive=True, dtype=torch.float32,
                              seed=seed)
    rec = spear.reconstruct(g.grad_weight, g.grad_bias, 16, unverified=True, seed=seed,
                            max_samples=2_000_000)
    assert not rec.complete and rec.verdict in ("unverified", "incomplete")
    assert rec.diagnosis
    checked = spear.reconstruct(g.grad_weight, g.grad_bias, 16, weight=g.weight, bias=g.bias,
                                seed=seed, max_samples=2_000_000)
    if checked.complete:
        assert matched_relative_errors(checked.inputs, g.inputs).max() < 1e-3
    elif checked.inputs is None:
        assert checked.diagnosis
    else:
        # A rejected set gives back the inputs its certificate clears: each must be right.
        assert checked.verdict == "partial" and "rejected" in checked.diagnosis
        assert len(checked.inputs) < 16 and set(checked.input_status) == {"consistent"}
        d = ((checked.inputs[:, None, :] - g.inputs[None]) ** 2).sum(-1)
        err = np.sqrt(d.min(axis=1)) / np.linalg.norm(g.inputs[d.argmin(axis=1)], axis=1)
        assert err.max() < 1e-3 and len(set(d.argmin(axis=1))) == len(err)


def test_more_inputs_than_the_gradient_shows_is_a_partial_result(small):
    # b = 4 inputs, asked for 5: the fifth would lie below float64 rounding (e.g. an input
    # whose every neuron is off). The 4 visible ones come back certified, the rest is named.
    rec = spear.reconstruct(small.grad_weight, small.grad_bias, 5, weight=small.weight,
                            bias=small.bias)
    assert rec.verdict == "partial" and not rec.complete and rec.certified
    assert rec.batch_size == 5 and rec.inputs.shape == (4, 20)
    assert rec.input_status == ["certified"] * 4
    assert "4 of 5 inputs" in rec.diagnosis and "below the level" in rec.diagnosis
    assert matched_relative_errors(rec.inputs, small.inputs).max() < 1e-8


def test_no_gap_in_the_spectrum_needs_a_batch_size():
    g = first_layer_gradients(6, dtype=torch.float64, seed=4)
    gw = g.grad_weight.numpy()
    # Noise as strong as the batch itself: its singular values do not stand out.
    noisy = gw + 0.3 * np.abs(gw).max() * np.random.default_rng(0).standard_normal(gw.shape)
    with pytest.raises(ValueError, match="no gap"):
        spear.reconstruct(noisy, g.grad_bias, weight=g.weight, bias=g.bias)


def test_verify_on_a_subset_is_not_consistent():
    # 15 of 16 true inputs: every sign agrees, but the gradient shows 16 inputs.
    g = first_layer_gradients(16, dtype=torch.float32, seed=3)
    v = spear.verify(g.grad_weight, g.grad_bias, g.weight, g.bias, g.inputs[:15])
    assert not v.certified and not v.consistent
    assert spear.verify(g.grad_weight, g.grad_bias, g.weight, g.bias, g.inputs).certified


def test_a_linear_without_bias_is_a_clear_error(small):
    with pytest.raises(ValueError, match="no bias"):
        spear.reconstruct(small.grad_weight, torch.zeros_like(small.grad_bias),
                          weight=small.weight, bias=small.bias)


def test_budget_exhausted_gives_no_answer():
    g = first_layer_gradients(14, positive=True, dtype=torch.float64, seed=5)
    rec = spear.reconstruct(g.grad_weight, g.grad_bias, weight=g.weight, bias=g.bias,
                            max_samples=1000)
    assert not rec.complete and rec.inputs is None and rec.certified is False
    assert rec.stats["samples"] == 1000
    assert rec.stats["directions_found"] <= 14
    assert rec.directions.shape[0] == 14


def test_time_limit_is_respected():
    # The exact stopping rule is tested with an injected clock (test_core.py); here the
    # real clock, with an honest margin for a loaded machine: after the deadline only the
    # running chunk (sized to the measured rate) and one selection may finish.
    g = first_layer_gradients(24, positive=True, dtype=torch.float64, seed=6)
    rec = spear.reconstruct(g.grad_weight, g.grad_bias, weight=g.weight, bias=g.bias,
                            time_limit=1.0)
    assert not rec.complete and rec.inputs is None
    assert rec.stats["seconds"]["total"] < 30


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_certificate_accepts_truth_and_rejects_tampering(dtype):
    g = first_layer_gradients(8, dtype=dtype, seed=3)
    layer = (g.grad_weight, g.grad_bias, g.weight, g.bias)
    rec = spear.reconstruct(*layer[:2], weight=g.weight, bias=g.bias)
    assert rec.certified
    assert spear.verify(*layer, rec.inputs).certified
    assert spear.verify(*layer, g.inputs[::-1]).certified          # order does not matter
    rng = np.random.default_rng(0)
    # One input replaced: the gradient is no longer explained.
    wrong = rec.inputs.copy()
    wrong[3] = rng.standard_normal(wrong.shape[1])
    v = spear.verify(*layer, wrong)
    assert not v.certified and v.residual > 1e-3
    # One column of Q replaced by a mixture of two columns (inputs mixed accordingly):
    # the row space is right, the sparsity pattern is not.
    M = np.eye(8)
    M[2, 5] = 0.5
    v = spear.verify(*layer, M @ rec.inputs)
    assert not v.certified and v.violations > 0
    # A random invertible mixing of all inputs.
    v = spear.verify(*layer, (np.eye(8) + 0.3 * rng.standard_normal((8, 8))) @ rec.inputs)
    assert not v.certified


def test_rounding_inside_the_inputs_span_is_not_a_violation(monkeypatch):
    """The client's float32 rounding of gW correlates with its inputs, so its part inside
    their span outgrows the isotropic noise model (ImageNet 720 px: 48-77 sigmas, and the
    true batch failed the exact check). Plant in-span errors of 0.05 of the rounding level
    eps ||gW_k|| ||X^+_i|| at the zeros of dZ (past the 25 sigmas of the old rule at this
    n): the true inputs are certified, a mixed set still is not."""
    from spear.attack import certify

    rng = np.random.default_rng(7)
    b, n, m = 4, 40_000, 50
    X = rng.standard_normal((b, n)).astype(np.float32).astype(np.float64)
    W = (rng.standard_normal((m, n)) / np.sqrt(n)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(m)).astype(np.float32)
    Z = W.astype(np.float64) @ X.T + bias[:, None]
    dZ = rng.standard_normal((m, b)) * (Z > 0)
    gW = dZ @ X
    level = (np.finfo(np.float32).eps * np.linalg.norm(gW, axis=1)[:, None]
             * np.linalg.norm(np.linalg.pinv(X), axis=0)[None, :])
    D = 0.05 * level * rng.choice([-1.0, 1.0], size=(m, b)) * (dZ == 0)
    gW = ((dZ + D) @ X).astype(np.float32)
    gb = (dZ + D).sum(axis=1).astype(np.float32)
    layer = (gW, gb, W, bias)
    v = spear.verify(*layer, X)
    assert v.certified and v.violations == 0
    mixed = np.eye(b)
    mixed[1, 2] = 0.5
    assert not spear.verify(*layer, mixed @ X).certified
    monkeypatch.setattr(certify, "CERT_ROUNDING", 0.0)      # the isotropic model alone
    v = spear.verify(*layer, X)
    assert not v.certified and v.violations > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b", [1, 3, 9, 17])
def test_batch_size_inference(b, dtype):
    g = first_layer_gradients(b, positive=(b % 2 == 1), dtype=dtype, seed=b, n=300)
    rec = spear.reconstruct(g.grad_weight, g.grad_bias, weight=g.weight, bias=g.bias,
                            max_samples=1)
    assert rec.batch_size == b


def test_gram_route_for_wide_inputs():
    # n >> m goes through the m x m Gram matrix and must stay exact.
    g = first_layer_gradients(5, width=50, n=20_000, dtype=torch.float64, seed=9)
    rec = spear.reconstruct(g.grad_weight, g.grad_bias, weight=g.weight, bias=g.bias)
    assert rec.certified
    assert matched_relative_errors(rec.inputs, g.inputs).max() < 1e-8


@pytest.fixture(scope="module")
def small():
    return first_layer_gradients(4, width=30, n=20, dtype=torch.float64, seed=1)


def test_accepts_numpy_torch_and_mixed(small):
    a = spear.reconstruct(small.grad_weight.numpy(), small.grad_bias, weight=small.weight.numpy(),
                          bias=small.bias)
    assert a.certified


@pytest.mark.parametrize("mutate,err,match", [
    (lambda g: dict(grad_weight=g.grad_weight[:, :-1]), ValueError, "weight must have shape"),
    (lambda g: dict(grad_bias=g.grad_bias[:-1]), ValueError, "grad_bias must have shape"),
    (lambda g: dict(grad_weight=g.grad_weight[0]), ValueError, "2-D"),
    (lambda g: dict(grad_weight=_poke(g.grad_weight, np.nan)), ValueError, "NaN or Inf"),
    (lambda g: dict(grad_bias=_poke(g.grad_bias, np.inf)), ValueError, "NaN or Inf"),
    (lambda g: dict(weight=_poke(g.weight, np.nan)), ValueError, "NaN or Inf"),
    (lambda g: dict(batch_size=21), ValueError, "min\\(m, n\\)"),
    (lambda g: dict(batch_size=3), ValueError, "smaller than the evident rank 4"),
    (lambda g: dict(batch_size=0), ValueError, ">= 1"),
    (lambda g: dict(batch_size=2.0), TypeError, "int"),
    (lambda g: dict(grad_weight=torch.zeros_like(g.grad_weight), grad_bias=torch.zeros_like(g.grad_bias)), ValueError, "zero"),
    (lambda g: dict(grad_weight=g.grad_weight.half()), TypeError, "float16"),
    (lambda g: dict(grad_weight=g.grad_weight.numpy().astype(np.int32)), TypeError, "int32"),
    (lambda g: dict(grad_weight=[[1.0]]), TypeError, "array"),
    (lambda g: dict(bias=None), ValueError, "both weight and bias"),
    (lambda g: dict(device="tpu"), ValueError, "device"),
    (lambda g: dict(max_samples=-3), ValueError, "max_samples"),
    (lambda g: dict(time_limit=0), ValueError, "time_limit"),
])
def test_bad_input_errors(small, mutate, err, match):
    kwargs = dict(grad_weight=small.grad_weight, grad_bias=small.grad_bias, weight=small.weight,
                  bias=small.bias)
    kwargs.update(mutate(small))
    with pytest.raises(err, match=match):
        spear.reconstruct(**kwargs)


def test_cuda_request_without_gpu_is_a_clear_error(small):
    if spear.cuda_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="CUDA"):
        spear.reconstruct(small.grad_weight, small.grad_bias, weight=small.weight,
                          bias=small.bias, device="cuda")


def _poke(t, value):
    t = t.clone()
    t.view(-1)[0] = value
    return t


def test_noise_is_never_certified_and_a_consistent_answer_is_right():
    # DP-style noise on the gradient: whatever comes out must not be called certified; a
    # set called consistent must be the batch up to what the noise allows.
    g = first_layer_gradients(6, dtype=torch.float64, seed=4)
    rng = np.random.default_rng(0)
    gw = g.grad_weight.numpy()
    noisy = gw + 1e-3 * np.abs(gw).max() * rng.standard_normal(gw.shape)
    rec = spear.reconstruct(noisy, g.grad_bias, 6, weight=g.weight, bias=g.bias, time_limit=30)
    assert rec.certified is False and rec.noise_level > 1e-4
    assert "additive noise" in rec.diagnosis
    if rec.complete:
        assert matched_relative_errors(rec.inputs, g.inputs).max() < 1e-2
    # And the true inputs themselves cannot be certified from such a gradient either.
    assert not spear.verify(noisy, g.grad_bias, g.weight, g.bias, g.inputs).certified


@pytest.mark.parametrize("b,positive", [(6, False), (12, True)])
def test_methods_agree(b, positive):
    g = first_layer_gradients(b, width=300, positive=positive, dtype=torch.float64, seed=b + 1)
    results = {}
    for method in ("sample", "dictionary", "auto"):
        rec = spear.reconstruct(g.grad_weight, g.grad_bias, b, weight=g.weight, bias=g.bias,
                                method=method, time_limit=60)
        assert rec.certified, method
        assert rec.stats["method"] == method
        if method == "dictionary":
            assert rec.stats["samples"] == 0
        if method == "sample":
            assert rec.stats["dictionary_rounds"] == 0 and rec.stats["samples"] > 0
        results[method] = rec
        assert matched_relative_errors(rec.inputs, g.inputs).max() < 1e-8
    with pytest.raises(ValueError, match="method"):
        spear.reconstruct(g.grad_weight, g.grad_bias, weight=g.weight, bias=g.bias, method="magic")


def test_dictionary_reaches_batches_the_sampler_cannot():
    g = first_layer_gradients(40, width=2000, dtype=torch.float32, seed=40)
    rec = spear.reconstruct(g.grad_weight, g.grad_bias, weight=g.weight, bias=g.bias,
                            time_limit=120)
    assert rec.batch_size == 40 and rec.complete and rec.certified
    assert matched_relative_errors(rec.inputs, g.inputs).max() < 1e-4
