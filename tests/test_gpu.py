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


# rho: zero fraction of the planted L. b = 20 and b = 33 need a sparser L (0.6, 0.72) to
# accept thousands of samples in 2e6 (at 0.3 they accepted none, so the b = 17..64 kernel
# variants were compared on empty arrays). b = 2, m = 40 accepts ~70% of the samples,
# over the 100,000 cap: the ordered compaction must keep the same lowest indices.
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("b,m,rho", [(2, 40, 0.5), (6, 120, 0.5), (12, 300, 0.5), (20, 200, 0.6),
                                     (33, 500, 0.72)])
def test_gpu_matches_cpu_for_the_same_seed(dtype, tol, b, m, rho):
    import cupy as cp

    L, _ = planted(m, b, rho, seed=b, dtype=dtype)
    n = 200_000 if b < 20 else 2_000_000
    cpu = spear.sample_directions(L, n, seed=5, tol=tol, device="cpu", offset=77)
    gpu = spear.sample_directions(cp.asarray(L), n, seed=5, tol=tol, offset=77)
    assert gpu.backend == "cuda" and gpu.evaluated == n
    assert len(cpu.index) > (1000 if b >= 20 else 10), "the case must accept samples"
    assert gpu.accepted_total == cpu.accepted_total
    np.testing.assert_array_equal(cp.asnumpy(gpu.index), cpu.index)
    np.testing.assert_array_equal(cp.asnumpy(gpu.zeros), cpu.zeros)
    # Same operations in the same order on both backends: the same bits.
    np.testing.assert_array_equal(cp.asnumpy(gpu.q), cpu.q)


def test_gpu_matches_reference():
    import cupy as cp

    L, _ = planted(100, 7, 0.5, seed=1)
    tol, mz = 1e-9, default_min_zeros(100, 7, 1e-9)
    gpu = spear.sample_directions(cp.asarray(L), 5000, seed=3, tol=tol, min_zeros=mz, probe=0)
    _, zeros, index = reference.sample_directions_reference(
        L, row_thresholds(L, tol), np.arange(5000), seed=3, min_zeros=mz, probe=0)
    np.testing.assert_array_equal(cp.asnumpy(gpu.index), index)
    np.testing.assert_array_equal(cp.asnumpy(gpu.zeros), zeros)


def test_gpu_truncation_keeps_the_lowest_indices():
    import cupy as cp

    L, _ = planted(100, 4, 0.5, seed=2)
    full = spear.sample_directions(cp.asarray(L), 50_000)
    few = spear.sample_directions(cp.asarray(L), 50_000, max_candidates=10)
    assert few.accepted_total == full.accepted_total and len(few.index) == 10
    np.testing.assert_array_equal(cp.asnumpy(few.index), cp.asnumpy(full.index[:10]))
    none = spear.sample_directions(cp.asarray(L), 50_000, max_candidates=0)
    assert none.accepted_total == full.accepted_total and len(none.index) == 0


def test_gpu_chunks_carry_the_count(monkeypatch):
    # Small chunks (3 tiles of 128 samples): the ordered compaction across chunk boundaries.
    import cupy as cp

    L, _ = planted(40, 2, 0.5, seed=2)
    cpu = spear.sample_directions(L, 20_000, seed=5, max_candidates=1000, device="cpu")
    monkeypatch.setenv("SPEAR_CUDA_CHUNK_TILES", "3")
    gpu = spear.sample_directions(cp.asarray(L), 20_000, seed=5, max_candidates=1000)
    assert gpu.accepted_total == cpu.accepted_total > 1000
    np.testing.assert_array_equal(cp.asnumpy(gpu.index), cpu.index)
    np.testing.assert_array_equal(cp.asnumpy(gpu.q), cpu.q)


def test_gpu_grid_fills_the_device_once():
    # Item 5: the grid is sized from the occupancy API, one resident wave.
    from spear import _core

    for dtype in ("float32", "float64"):
        for b in (8, 20, 64):
            info = _core.cuda_kernel_info(dtype, b)
            assert info["blocks_per_sm"] >= 1 and info["sms"] >= 1
            assert info["blocks_per_sm"] * info["threads_per_block"] <= 2048


def test_gpu_torch_cuda_tensor():
    import cupy as cp

    if not torch.cuda.is_available():
        pytest.skip("torch without CUDA")
    L, _ = planted(120, 8, 0.5, seed=8)
    Lt = torch.as_tensor(L, device="cuda")
    got = spear.sample_directions(Lt, 50_000, seed=3)
    ref = spear.sample_directions(L, 50_000, seed=3, device="cpu")
    assert got.backend == "cuda" and isinstance(got.q, torch.Tensor) and got.q.is_cuda
    np.testing.assert_array_equal(got.index.cpu().numpy(), ref.index)
    del cp


def test_gpu_array_on_another_device():
    import cupy as cp

    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    L, _ = planted(120, 8, 0.5, seed=8)
    with cp.cuda.Device(1):
        Ld = cp.asarray(L)
    got = spear.sample_directions(Ld, 50_000, seed=3)      # current device is 0
    ref = spear.sample_directions(L, 50_000, seed=3, device="cpu")
    assert got.q.device.id == 1
    np.testing.assert_array_equal(cp.asnumpy(got.index), ref.index)


def test_gpu_above_the_kernel_limit_falls_back_to_cpu():
    import cupy as cp

    from spear import _core

    L, _ = planted(200, _core.cuda_max_b + 2, 0.5, seed=1)
    got = spear.sample_directions(cp.asarray(L), 1000, device="cuda")
    assert got.backend == "cpu" and isinstance(got.q, cp.ndarray)


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
