"""The compiled CPU kernel against the plain numpy reference of the same per-sample math."""
from __future__ import annotations

import numpy as np
import pytest

import spear
from spear import _core
from spear.attack import reference
from spear.attack.kernel import default_min_zeros, row_thresholds

KAT = [  # Random123 known-answer vectors for Philox4x32-10
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    ref = reference.philox4x32_10(np.array(counter, np.uint64), np.array(key, np.uint64))
    assert tuple(int(v) for v in ref) == expected
    assert tuple(_core.philox4x32_10(list(counter), list(key))) == expected


def planted(m: int, b: int, rho: float, seed: int, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """L = dZ Q^-1 with a sparse dZ (zero fraction rho): the columns of Q are planted
    sparse directions of L. Returns (L, unit Q)."""
    rng = np.random.default_rng(seed)
    dZ = rng.standard_normal((m, b)) * (rng.random((m, b)) > rho)
    dZ = dZ[dZ.any(axis=1)]
    Q = rng.standard_normal((b, b))
    L = dZ @ np.linalg.inv(Q)
    return L.astype(dtype), Q / np.linalg.norm(Q, axis=0)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("b,probe", [(2, 0), (5, 0), (8, 64), (10, 16)])
def test_cpu_kernel_matches_reference(dtype, tol, b, probe):
    L, Q = planted(120, b, 0.5, seed=b, dtype=dtype)
    m = L.shape[0]
    min_zeros = default_min_zeros(m, b, tol)
    n, offset, seed = (3000 if b < 8 else 30000), 12345, 7
    got = spear.sample_directions(L, n, seed=seed, tol=tol, min_zeros=min_zeros, offset=offset,
                                  probe=probe, device="cpu")
    q, zeros, index = reference.sample_directions_reference(
        L, row_thresholds(L, tol), np.arange(offset, offset + n), seed=seed,
        min_zeros=min_zeros, probe=probe, probe_min=1)
    assert got.evaluated == n
    assert len(index) > 0, "the planted directions should be found"
    np.testing.assert_array_equal(got.index, index)
    np.testing.assert_array_equal(got.zeros, zeros)
    np.testing.assert_allclose(got.q, q, atol=1e-4 if dtype == np.float32 else 1e-10)
    # Every planted column is among the candidates (mixtures of columns may be too).
    cos = np.abs(got.q.astype(np.float64) @ Q).max(axis=0)
    assert (cos > 1 - 1e-5).all()


def test_rows_drawn_match_reference():
    # Every candidate's zero rows include the b-1 rows the reference says were drawn.
    L, _ = planted(60, 6, 0.5, seed=3)
    tol = 1e-9
    got = spear.sample_directions(L, 2000, seed=11, tol=tol, min_zeros=5, probe=0)
    rows = reference.draw_rows(11, got.index, L.shape[0], 5)
    assert (np.sort(rows, axis=1)[:, 1:] != np.sort(rows, axis=1)[:, :-1]).all()  # distinct
    resid = np.abs(np.take_along_axis(got.q @ L.T, rows, axis=1))
    assert resid.max() <= tol * np.linalg.norm(L, axis=1).max()


def test_seed_and_offset_select_the_stream():
    L, _ = planted(100, 6, 0.5, seed=1)
    a = spear.sample_directions(L, 4000, seed=1, offset=0)
    b = spear.sample_directions(L, 2000, seed=1, offset=2000)
    tail = a.index >= 2000
    np.testing.assert_array_equal(a.index[tail], b.index)
    c = spear.sample_directions(L, 4000, seed=2, offset=0)
    assert not np.array_equal(a.index, c.index)


def test_thread_count_and_truncation_do_not_change_results():
    L, _ = planted(100, 5, 0.5, seed=4)
    one = spear.sample_directions(L, 50_000, num_threads=1)
    two = spear.sample_directions(L, 50_000, num_threads=2)
    np.testing.assert_array_equal(one.index, two.index)
    np.testing.assert_array_equal(one.q, two.q)
    few = spear.sample_directions(L, 50_000, max_candidates=10, num_threads=2)
    assert few.accepted_total == one.accepted_total > 10
    np.testing.assert_array_equal(few.index, one.index[:10])


def test_random_matrix_yields_nothing():
    # Without planted sparsity no proposal has more zeros than its own b-1 rows.
    L = np.random.default_rng(0).standard_normal((150, 6))
    assert len(spear.sample_directions(L, 20_000).index) == 0


@pytest.mark.parametrize("bad,err", [
    (np.zeros((10, 3), dtype=np.int64), TypeError),
    (np.ones((10, 3), dtype=np.float16), TypeError),
    (np.ones(10), ValueError),
    (np.full((10, 3), np.nan), ValueError),
    (np.vstack([np.ones((9, 3)), np.zeros((1, 3))]), ValueError),
    (np.ones((2, 5)), ValueError),
])
def test_bad_input(bad, err):
    with pytest.raises(err):
        spear.sample_directions(bad, 10)


def test_bad_arguments():
    L, _ = planted(50, 4, 0.5, seed=0)
    with pytest.raises(ValueError):
        spear.sample_directions(L, -1)
    with pytest.raises(ValueError):
        spear.sample_directions(L, 10, tol=0)
    with pytest.raises(ValueError):
        spear.sample_directions(L, 10, device="tpu")


# --- The CUDA kernel's schedule, run on the host (issue #16 item 1) -----------------------

def _emulate(L, tol, n, *, seed=5, offset=77, min_zeros=None, probe=None, cap=100_000, grid=7,
             chunk_tiles=3, order_seed=1):
    from spear.attack.kernel import default_probe

    m, b = L.shape
    mz = default_min_zeros(m, b, tol) if min_zeros is None else min_zeros
    probe = default_probe(b) if probe is None else probe
    return _core.emulate_cuda_schedule(L, row_thresholds(L, tol), seed, offset, n, mz, probe, 1,
                                       cap, grid, chunk_tiles, order_seed)


@pytest.mark.parametrize("order_seed", [0, 1, 12345])
def test_cuda_schedule_keeps_the_lowest_indices_when_truncating(order_seed):
    # b = 2, m = 40 accepts most samples: far more than the capacity. The emulated device
    # schedule (blocks and threads in shuffled order, several chunks) must return exactly
    # the CPU kernel's lowest-index candidates, in order, and the full accepted count.
    L, _ = planted(40, 2, 0.5, seed=2)
    cap, n = 300, 3000
    cpu = spear.sample_directions(L, n, seed=5, offset=77, max_candidates=cap, device="cpu")
    assert cpu.accepted_total > 2 * cap
    q, zeros, index, evaluated, total = _emulate(L, 1e-9, n, cap=cap, order_seed=order_seed)
    assert evaluated == n and total == cpu.accepted_total
    np.testing.assert_array_equal(index, cpu.index)
    np.testing.assert_array_equal(zeros, cpu.zeros)
    np.testing.assert_array_equal(q, cpu.q)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("grid,chunk_tiles", [(1, 1), (5, 2), (64, 1 << 15)])
def test_cuda_schedule_matches_cpu_kernel(dtype, tol, grid, chunk_tiles):
    L, _ = planted(120, 8, 0.5, seed=8, dtype=dtype)
    n = 5000
    cpu = spear.sample_directions(L, n, seed=5, offset=77, tol=tol, device="cpu")
    q, zeros, index, _, total = _emulate(L, tol, n, grid=grid, chunk_tiles=chunk_tiles,
                                         order_seed=99)
    assert len(index) > 0 and total == cpu.accepted_total
    np.testing.assert_array_equal(index, cpu.index)
    np.testing.assert_array_equal(q, cpu.q)


def test_cuda_schedule_zero_capacity_still_counts():
    L, _ = planted(40, 2, 0.5, seed=2)
    q, zeros, index, _, total = _emulate(L, 1e-9, 1000, cap=0)
    assert len(index) == 0 and q.shape == (0, 2)
    assert total == spear.sample_directions(L, 1000, seed=5, offset=77).accepted_total > 0


# --- Parameter validation, in Python and at the C++ boundary (item 4) ----------------------

@pytest.mark.parametrize("kw,err", [
    (dict(probe=-1_000_000), ValueError),
    (dict(probe=-1), ValueError),
    (dict(probe_min=-1), ValueError),
    (dict(min_zeros=-3), ValueError),
    (dict(min_zeros=10_000), ValueError),
    (dict(max_candidates=-1), ValueError),
    (dict(num_threads=-2), ValueError),
    (dict(offset=-5), ValueError),
    (dict(seed=-1), ValueError),
    (dict(seed=2**64), ValueError),
    (dict(offset=2**64 - 5), ValueError),
    (dict(probe=1.5), TypeError),
    (dict(tol=float("nan")), ValueError),
])
def test_bad_parameters_raise(kw, err):
    L, _ = planted(50, 9, 0.5, seed=0)
    with pytest.raises(err):
        spear.sample_directions(L, 100, **kw)


@pytest.mark.parametrize("args,match", [
    (dict(probe=-1_000_000), "probe"),
    (dict(probe_min=-1), "probe_min"),
    (dict(min_zeros=-1), "min_zeros"),
    (dict(min_zeros=51), "min_zeros"),
    (dict(max_candidates=-1), "max_candidates"),
    (dict(num_threads=-1), "num_threads"),
    (dict(num_samples=-1), "num_samples"),
    (dict(offset=2**64 - 1), "offset"),
])
def test_core_entry_validates(args, match):
    # Straight into the compiled module, past the Python checks: must raise, not crash.
    L, _ = planted(50, 9, 0.5, seed=0)
    kw = dict(L=L, thresh=row_thresholds(L, 1e-9), seed=0, offset=0, num_samples=10,
              min_zeros=10, probe=8, probe_min=1, max_candidates=10, num_threads=1)
    kw.update(args)
    with pytest.raises(ValueError, match=match):
        _core.sample_cpu(**kw)


def test_core_entry_checks_arrays():
    L, _ = planted(50, 9, 0.5, seed=0)
    t = row_thresholds(L, 1e-9)
    base = dict(seed=0, offset=0, num_samples=10, min_zeros=10, probe=8, probe_min=1,
                max_candidates=10, num_threads=1)
    with pytest.raises(ValueError, match="thresh"):
        _core.sample_cpu(L, t[:-1], **base)
    with pytest.raises(TypeError, match="thresh"):
        _core.sample_cpu(L, t.astype(np.float32), **base)
    with pytest.raises(ValueError, match="2-D"):
        _core.sample_cpu(L.ravel(), t, **base)
    with pytest.raises(TypeError):
        _core.sample_cpu(L.astype(np.int64), t.astype(np.int64), **base)
    # Non-contiguous input is copied, not misread.
    Lf = np.asfortranarray(L)
    a = _core.sample_cpu(Lf, t, **base)
    b = _core.sample_cpu(L, t, **base)
    np.testing.assert_array_equal(a[2], b[2])


class _FakeCuda:
    """An object that looks like a device array (only __cuda_array_interface__)."""

    def __init__(self, shape, typestr, ptr=0x10000, readonly=False, strides=None):
        self.__cuda_array_interface__ = dict(shape=tuple(shape), typestr=typestr,
                                             data=(ptr, readonly), strides=strides, version=3)


@pytest.mark.skipif(not _core.built_with_cuda, reason="built without the CUDA kernel")
@pytest.mark.parametrize("change,err,match", [
    (dict(thresh=_FakeCuda((49,), "<f8")), ValueError, "thresh"),
    (dict(thresh=_FakeCuda((50,), "<f4")), TypeError, "thresh"),
    (dict(out_q=_FakeCuda((10, 8), "<f8")), ValueError, "out_q"),
    (dict(out_zeros=_FakeCuda((10,), "<i8")), TypeError, "out_zeros"),
    (dict(out_index=_FakeCuda((9,), "<i8")), ValueError, "out_index"),
    (dict(count=_FakeCuda((1,), "<u8", readonly=True)), ValueError, "count"),
    (dict(L=_FakeCuda((50, 9), "<f8", strides=(8, 400))), ValueError, "contiguous"),
    (dict(L=_FakeCuda((80, 65), "<f8"), thresh=_FakeCuda((80,), "<f8"),
          out_q=_FakeCuda((10, 65), "<f8")), ValueError, "b <= 64"),
    (dict(L=np.ones((50, 9))), TypeError, "CUDA"),
    (dict(probe=-1_000_000), ValueError, "probe"),
    (dict(L=_FakeCuda((50, 9), "<f8", ptr=0)), ValueError, "null"),
])
def test_cuda_entry_validates_before_any_cuda_call(change, err, match):
    kw = dict(L=_FakeCuda((50, 9), "<f8"), thresh=_FakeCuda((50,), "<f8"), seed=0, offset=0,
              num_samples=10, min_zeros=10, probe=8, probe_min=1,
              out_q=_FakeCuda((10, 9), "<f8"), out_zeros=_FakeCuda((10,), "<i4"),
              out_index=_FakeCuda((10,), "<i8"), count=_FakeCuda((1,), "<u8"), stream=0)
    kw.update(change)
    with pytest.raises(err, match=match):
        _core.sample_cuda(**kw)


# --- Dispatch for b above the CUDA kernel's limit (item 3) --------------------------------

def test_sampler_device():
    from spear.attack.kernel import sampler_device

    limit = _core.cuda_max_b
    assert sampler_device("cpu", 5) == "cpu"
    assert sampler_device("cpu", 200) == "cpu"
    assert sampler_device("cuda", limit + 1) == "cpu"
    if limit:
        assert sampler_device("cuda", limit) == "cuda"
        assert sampler_device("cuda", 2) == "cuda"
    with pytest.raises(ValueError):
        sampler_device("tpu", 5)


def test_cuda_request_above_the_limit_runs_the_cpu_kernel(monkeypatch):
    # What reconstruct does on a CUDA backend for every chunk: device="cuda". Pretend a
    # GPU is there; b above the kernel's limit must run the CPU kernel, not raise.
    from spear.attack import kernel

    monkeypatch.setattr(kernel._backend, "cuda_available", lambda: True)
    monkeypatch.setattr(_core, "cuda_max_b", 6)
    L, _ = planted(80, 7, 0.5, seed=7)
    got = spear.sample_directions(L, 3000, seed=1, device="cuda")
    ref = spear.sample_directions(L, 3000, seed=1, device="cpu")
    assert got.backend == "cpu" and len(got.index) > 0
    np.testing.assert_array_equal(got.index, ref.index)


# --- torch input (item 6) ------------------------------------------------------------------

def test_torch_cpu_tensor_is_accepted():
    torch = pytest.importorskip("torch")
    L, _ = planted(80, 6, 0.5, seed=6)
    got = spear.sample_directions(torch.from_numpy(L), 3000, seed=1)
    ref = spear.sample_directions(L, 3000, seed=1)
    assert got.backend == "cpu"
    np.testing.assert_array_equal(got.index, ref.index)


# --- CPU == GPU rounding survives a user's fast-math flags (item 6) ------------------------

def test_cuda_code_ignores_fast_math_flags(tmp_path):
    # nvcc turns even __fmul_rn-style intrinsics into .ftz / approximate instructions under
    # --use_fast_math or -ftz=true, which would break bit equality with the CPU. The kernel
    # writes float arithmetic as PTX without .ftz: the PTX must not change with the flags.
    import re
    import shutil
    import subprocess
    from pathlib import Path

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not found")
    root = Path(__file__).resolve().parent.parent
    src = root / "csrc" / "cuda" / "sampler_cuda.cu"

    def ptx(*flags):
        out = tmp_path / f"k{len(flags)}.ptx"
        subprocess.run([nvcc, *flags, "-std=c++17", "-arch=sm_90", f"-I{root / 'csrc' / 'include'}",
                        f"-I{root / 'csrc'}", "-ptx", str(src), "-o", str(out)], check=True)
        return [ln for ln in out.read_text().splitlines() if not ln.startswith("//")]

    fast = ptx("--use_fast_math", "-ftz=true")
    bad = [ln for ln in fast if re.search(r"\.ftz|\.approx|\bfma\.rn\.f", ln)]
    assert not bad, bad[:5]
    assert fast == ptx()


# --- The CPU kernel's per-sample paths: all bit-identical to the reference -----------------

def _simd_paths():
    paths = ["scalar", "generic"]
    try:
        prev = _core.set_cpu_simd("avx512")
        _core.set_cpu_simd("auto")
        paths.append("avx512")
    except ValueError:
        pass
    del prev
    return paths


@pytest.fixture
def simd_path(request):
    _core.set_cpu_simd(request.param)
    yield request.param
    _core.set_cpu_simd("auto")


@pytest.mark.parametrize("simd_path", _simd_paths(), indirect=True)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("b,m,rho,n,probe", [(2, 40, 0.5, 500, 0), (5, 120, 0.5, 3000, 0),
                                             (9, 120, 0.5, 10000, 64), (20, 200, 0.6, 10000, 64),
                                             (33, 300, 0.75, 4000, 64), (64, 300, 0.85, 300, 64),
                                             (70, 300, 0.85, 100, 64)])
def test_every_simd_path_is_bit_identical_to_the_reference(simd_path, dtype, tol, b, m, rho, n,
                                                           probe):
    # Offsets and counts that are not multiples of the lane count leave partial groups.
    L, _ = planted(m, b, rho, seed=b, dtype=dtype)
    m = L.shape[0]
    mz = default_min_zeros(m, b, tol)
    offset, seed = 13, 3
    got = spear.sample_directions(L, n, seed=seed, tol=tol, min_zeros=mz, offset=offset,
                                  probe=probe, num_threads=2)
    assert _core.cpu_simd() == simd_path
    q, zeros, index = reference.sample_directions_reference(
        L, row_thresholds(L, tol), np.arange(offset, offset + n), seed=seed, min_zeros=mz,
        probe=probe, probe_min=1)
    if b <= 33:
        assert len(index) > 0
    np.testing.assert_array_equal(got.index, index)
    np.testing.assert_array_equal(got.zeros, zeros)
    np.testing.assert_array_equal(got.q, q)


def test_set_cpu_simd_rejects_unknown_names():
    with pytest.raises(ValueError, match="simd"):
        _core.set_cpu_simd("sse9")
    assert _core.cpu_simd() in ("avx512", "scalar")


@pytest.mark.parametrize("simd_path", _simd_paths(), indirect=True)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("b,m", [(20, 21), (20, 40), (9, 200), (33, 36), (64, 400)])
def test_row_draws_with_many_repeats_match_the_reference(simd_path, dtype, b, m):
    # The lock-step draw takes the first words of 8 samples at once and tests repeats
    # lane-wise; with m close to b-1 most samples repeat rows, and many need more words
    # than were drawn up front (their own stream from the start). b = 33 and 64 test more
    # 8-word chunks of the AVX-512 duplicate test (b = 64 draws 68 words, tests 64). A tolerance that makes
    # every row a zero accepts every sample, so each sample's rows show in its candidate.
    L = np.random.default_rng(b + m).standard_normal((m, b)).astype(dtype)
    tol, n, offset, seed = 10.0, 2000, 5, 9
    got = spear.sample_directions(L, n, seed=seed, tol=tol, min_zeros=m, offset=offset,
                                  probe=0, num_threads=2)
    q, zeros, index = reference.sample_directions_reference(
        L, row_thresholds(L, tol), np.arange(offset, offset + n), seed=seed, min_zeros=m)
    assert len(index) > n // 2
    np.testing.assert_array_equal(got.index, index)
    np.testing.assert_array_equal(got.zeros, zeros)
    np.testing.assert_array_equal(got.q, q)


@pytest.mark.parametrize("simd_path", _simd_paths(), indirect=True)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-9), (np.float32, 1e-4)])
@pytest.mark.parametrize("b", [9, 20, 33])
def test_pivot_ties_match_the_reference(simd_path, dtype, tol, b):
    # Entries in {-2, .., 2}: pivot columns hold many equal |values|, where partial pivoting
    # takes the first row with the largest one (the lock-step search scans segments of the
    # column side by side and merges them in row order). min_zeros = b-1 and no probe accept
    # every sample whose pivots do not vanish, so each candidate is compared bit for bit.
    L = np.random.default_rng(b).integers(-2, 3, (3 * b, b)).astype(dtype)
    L = L[np.abs(L).sum(axis=1) > 0]
    n, seed = 3000, 4
    got = spear.sample_directions(L, n, seed=seed, tol=tol, min_zeros=b - 1, probe=0,
                                  num_threads=2)
    q, zeros, index = reference.sample_directions_reference(
        L, row_thresholds(L, tol), np.arange(n), seed=seed, min_zeros=b - 1)
    assert len(index) > n // 4
    np.testing.assert_array_equal(got.index, index)
    np.testing.assert_array_equal(got.zeros, zeros)
    np.testing.assert_array_equal(got.q, q)
