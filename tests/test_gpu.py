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


def _true_columns(g, p):
    dZ = g.grad_weight.double().numpy() @ np.linalg.pinv(g.inputs)
    Q = np.linalg.lstsq(p.L_live, dZ[p.live], rcond=None)[0]
    return (Q / np.linalg.norm(Q, axis=0)).T


@pytest.mark.parametrize("source", ["screened", "dictionary"])
def test_gpu_dictionary_rounds_on_cupy_match_numpy(source):
    """The same round on CuPy (the problem on the GPU) and on numpy: exact true columns,
    as many on both (the arithmetic differs in rounding, so the sets are compared, not
    the bits)."""
    from spear.attack import prepare
    from spear.attack.budget import Budget
    from spear.attack.screened import Screened
    from spear.attack.sources import Dictionary

    b, m = 48, 1000
    g = first_layer_gradients(b, width=m, n=784, dtype=torch.float32, seed=4)
    cls = Screened if source == "screened" else Dictionary
    found = {}
    for device in ("cpu", "cuda"):
        p = prepare(g.grad_weight, g.grad_bias, b, weight=g.weight, bias=g.bias, device=device)
        assert p.backend.name == device
        q = cls().propose(p, np.empty((0, b)), Budget(), seed=0).q
        assert isinstance(q, np.ndarray)                    # proposals come back on the host
        true = np.abs(q @ _true_columns(g, p).T).max(axis=1) > 1 - 1e-6
        assert true.mean() >= 0.9
        found[device] = int(true.sum())
    assert found["cuda"] >= 0.75 * b
    assert abs(found["cuda"] - found["cpu"]) <= max(2, b // 10)


def test_gpu_large_batch_reconstruction_runs_the_dictionary_on_cupy():
    g = first_layer_gradients(64, width=1000, n=784, dtype=torch.float32, seed=7)
    rec = spear.reconstruct(g.grad_weight, g.grad_bias, 64, weight=g.weight, bias=g.bias,
                            device="cuda", time_limit=120)
    assert rec.stats["backend"] == "cuda" and rec.certified
    assert matched_relative_errors(rec.inputs, g.inputs).max() < 1e-3


@pytest.mark.parametrize("dtype,b", [("float32", 20), ("float64", 12), ("float32", 10)])
def test_gpu_shared_and_local_scratch_give_the_same_samples(monkeypatch, dtype, b):
    """Pass 1 keeps its scratch in shared memory where it pays (b > 8, scratch and L fit
    an SM's L1: fp32 b <= 20, fp64 b <= 14 at m = 200 on an H100) and in local memory
    otherwise: the same code on other memory, so the same bits."""
    import cupy as cp

    from spear import _core

    m = 10 * b
    L, _ = planted(m, b, 0.6, seed=b)
    L = cp.asarray(L.astype(dtype))
    shared = spear.sample_directions(L, 300_000, seed=2)
    assert _core.cuda_kernel_info(dtype, b, L.shape[0])["shared_bytes"] > 0
    assert _core.cuda_kernel_info(dtype, 8, 100)["shared_bytes"] == 0       # small b: local
    assert _core.cuda_kernel_info(dtype, b, 20_000)["shared_bytes"] == 0    # L crowds out L1
    monkeypatch.setenv("SPEAR_CUDA_SCRATCH", "local")
    assert _core.cuda_kernel_info(dtype, b, L.shape[0])["shared_bytes"] == 0
    local = spear.sample_directions(L, 300_000, seed=2)
    assert shared.accepted_total == local.accepted_total > 0
    assert np.array_equal(cp.asnumpy(shared.index), cp.asnumpy(local.index))
    assert np.array_equal(cp.asnumpy(shared.q), cp.asnumpy(local.q))
