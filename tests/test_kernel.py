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
