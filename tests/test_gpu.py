"""GPU checks: the CUDA kernel against the CPU kernel for the same seed, and end-to-end
reconstruction on CuPy. Skipped cleanly without a GPU (and CuPy)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import spear
from spear.attack import reference
from spear.attack.kernel import default_min_zeros, row_thresholds
from gradients import first_layer_gradients, matched_relative_errors
from test_kernel import planted

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not spear.cuda_available(), reason="no CUDA GPU (or CuPy) available"),
]


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("b,m", [(2, 40), (6, 120), (12, 300), (20, 200), (33, 500)])
def test_gpu_matches_cpu_for_the_same_seed(dtype, tol, b, m):
    import cupy as cp

    L, _ = planted(m, b, 0.5 if b < 20 else 0.3, seed=b, dtype=dtype)
    n = 200_000 if b < 20 else 2_000_000
    cpu = spear.sample_directions(L, n, seed=5, tol=tol, device="cpu", offset=77)
    gpu = spear.sample_directions(cp.asarray(L), n, seed=5, tol=tol, offset=77)
    assert gpu.backend == "cuda" and gpu.evaluated == n
    np.testing.assert_array_equal(cp.asnumpy(gpu.index), cpu.index)
    np.testing.assert_array_equal(cp.asnumpy(gpu.zeros), cpu.zeros)
    np.testing.assert_allclose(cp.asnumpy(gpu.q), cpu.q, atol=1e-4 if dtype == np.float32 else 1e-10)


def test_gpu_matches_reference():
    import cupy as cp

    L, _ = planted(100, 7, 0.5, seed=1)
    tol, mz = 1e-9, default_min_zeros(100, 7, 1e-9)
    gpu = spear.sample_directions(cp.asarray(L), 5000, seed=3, tol=tol, min_zeros=mz, probe=0)
    _, zeros, index = reference.sample_directions_reference(
        L, row_thresholds(L, tol), np.arange(5000), seed=3, min_zeros=mz, probe=0)
    np.testing.assert_array_equal(cp.asnumpy(gpu.index), index)
    np.testing.assert_array_equal(cp.asnumpy(gpu.zeros), zeros)


def test_gpu_truncation_reports_total():
    import cupy as cp

    L, _ = planted(100, 4, 0.5, seed=2)
    full = spear.sample_directions(cp.asarray(L), 50_000)
    few = spear.sample_directions(cp.asarray(L), 50_000, max_candidates=10)
    assert few.accepted_total == full.accepted_total and len(few.index) == 10


@pytest.mark.parametrize("b,positive", [(8, False), (16, False), (12, True)])
def test_gpu_reconstruction_matches_cpu(b, positive):
    import cupy as cp

    g = first_layer_gradients(b, positive=positive, dtype=torch.float32, seed=b)
    args = (g.grad_weight, g.grad_bias)
    kw = dict(weight=g.weight, bias=g.bias)
    gpu = spear.reconstruct(*args, device="cuda", **kw)
    cpu = spear.reconstruct(*args, device="cpu", **kw)
    assert gpu.stats["backend"] == "cuda" and gpu.complete and gpu.certified
    assert matched_relative_errors(gpu.inputs, g.inputs).max() < 1e-4
    assert matched_relative_errors(gpu.inputs, cpu.inputs).max() < 1e-4
    # CuPy inputs are accepted as they are.
    gpu2 = spear.reconstruct(cp.asarray(g.grad_weight.numpy()), cp.asarray(g.grad_bias.numpy()),
                             **kw)
    assert gpu2.certified
