"""Tests of reconstruction metrics (spear.metrics)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from spear.metrics import (
    PSNR_CAP_DB,
    RECOVERED_REL_ERR,
    feature_metrics,
    image_metrics,
    match,
    tabular_metrics,
)


def _images(k: int = 5, c: int = 3, side: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # Smooth-ish images so SSIM is meaningful on tiny sizes.
    base = rng.random((k, c, 1, side)) * 0.5 + rng.random((k, c, side, 1)) * 0.5
    return base.astype(np.float32)


def test_match_recovers_random_permutation():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(12, 30))
    perm = rng.permutation(12)
    recon = truth[perm] + 1e-3 * rng.normal(size=truth.shape)
    assignment = match(recon, truth)
    np.testing.assert_array_equal(assignment, np.argsort(perm))
    np.testing.assert_allclose(recon[assignment], truth, atol=1e-2)


def test_match_fewer_recon_rows_and_nan_rows():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=(6, 10))
    recon = truth[[4, 1, 3]]
    np.testing.assert_array_equal(match(recon, truth), [-1, 1, -1, 2, 0, -1])
    with_nan = np.vstack([np.full((1, 10), np.nan), truth[[2, 5]]])
    np.testing.assert_array_equal(match(with_nan, truth[[2, 5, 0]]), [1, 2, 0])


def test_psnr_identical_is_cap_and_formula():
    truth = _images()
    exact = image_metrics(truth, truth)
    np.testing.assert_array_equal(exact["psnr"], PSNR_CAP_DB)
    assert exact["psnr_mean"] == PSNR_CAP_DB
    np.testing.assert_array_equal(exact["mse"], 0.0)

    # A constant offset of 0.1 gives MSE 0.01, i.e. 20 dB for data range 1.
    shifted = image_metrics(truth + np.float32(0.1), truth)
    np.testing.assert_allclose(shifted["psnr"], 20.0, atol=1e-4)

    # A larger data range scales PSNR by 20 log10(range) at equal MSE.
    wide = image_metrics(truth + np.float32(0.1), truth, data_range=255.0)
    np.testing.assert_allclose(wide["psnr"], 20.0 + 20 * math.log10(255.0), atol=1e-4)


def test_psnr_hand_computation():
    rng = np.random.default_rng(4)
    truth = rng.random((3, 1, 6, 6)) * 255
    recon = truth + rng.normal(scale=4.0, size=truth.shape)
    res = image_metrics(recon, truth, data_range=255.0)
    np.testing.assert_array_equal(res["permutation"], [0, 1, 2])
    for i in range(3):
        mse = np.mean((recon[i] - truth[i]) ** 2)
        assert res["mse"][i] == pytest.approx(mse)
        assert res["psnr"][i] == pytest.approx(10 * math.log10(255.0**2 / mse))
    assert res["psnr_mean"] == pytest.approx(np.mean(res["psnr"]))


def test_ssim_identical_one_noise_low_tiny_images():
    rng = np.random.default_rng(5)
    for channels in (1, 3):
        truth = _images(k=4, c=channels)
        same = image_metrics(truth, truth)
        np.testing.assert_allclose(same["ssim"], 1.0, atol=1e-12)
        noise = image_metrics(rng.random(truth.shape), truth)
        assert noise["ssim_mean"] < 0.5
    # Grayscale without channel axis and flattened input with shape= agree.
    gray = _images(k=2, c=1)[:, 0]
    assert image_metrics(gray, gray)["ssim_mean"] == pytest.approx(1.0)
    flat = _images(k=2).reshape(2, -1)
    assert image_metrics(flat, flat, shape=(3, 8, 8))["ssim_mean"] == pytest.approx(1.0)


def test_recovered_threshold_both_sides():
    rng = np.random.default_rng(6)
    truth = rng.normal(size=(2, 50))
    direction = rng.normal(size=(2, 50))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    norms = np.linalg.norm(truth, axis=1, keepdims=True)
    factors = np.array([[0.5], [2.0]]) * RECOVERED_REL_ERR
    recon = truth + direction * norms * factors
    res = feature_metrics(recon, truth)
    np.testing.assert_allclose(res["rel_err"], factors[:, 0], rtol=1e-9)
    np.testing.assert_array_equal(res["recovered"], [True, False])
    assert res["recovered_fraction"] == 0.5
    # Same definition for images.
    img = image_metrics(recon.reshape(2, 2, 5, 5), truth.reshape(2, 2, 5, 5), data_range=8.0)
    np.testing.assert_array_equal(img["recovered"], [True, False])


def test_feature_metrics_cosine_and_missing_rows():
    truth = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    recon = np.array([[0.0, 0.0, 6.0], [2.0, 0.0, 0.0]])  # row 2 scaled by 2, row 0 scaled by 2
    res = feature_metrics(recon, truth)
    np.testing.assert_array_equal(res["permutation"], [1, -1, 0])
    np.testing.assert_allclose(res["cosine"][[0, 2]], 1.0)
    assert np.isnan(res["cosine"][1])
    np.testing.assert_allclose(res["rel_err"], [1.0, np.inf, 1.0])
    assert res["recovered_fraction"] == 0.0 and res["n_matched"] == 2
    assert res["rel_err_mean"] == pytest.approx(1.0)


def test_image_metrics_fewer_recon_rows_and_json():
    truth = _images(k=4)
    res = image_metrics(truth[[2, 0]], truth)
    np.testing.assert_array_equal(res["permutation"], [1, -1, 0, -1])
    np.testing.assert_array_equal(res["recovered"], [True, False, True, False])
    assert res["recovered_fraction"] == 0.5 and res["n_matched"] == 2
    assert np.isnan(res["psnr"][1]) and np.isnan(res["ssim"][3])
    assert res["psnr_mean"] == PSNR_CAP_DB and res["ssim_mean"] == pytest.approx(1.0)
    text = json.dumps({k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in res.items()})
    assert json.loads(text)["n_matched"] == 2


def test_tabular_metrics_hand_built():
    truth = {
        "age": np.array([30.0, 40.0, 50.0, 60.0]),
        "job": np.array(["a", "b", "c", "d"], dtype=object),
        "sex": np.array(["m", "f", "f", "m"]),
    }
    recon = {
        "age": np.array([31.0, 40.0, 47.0, 60.0]),
        "job": np.array(["a", "x", "c", "d"], dtype=object),
        "sex": np.array(["m", "f", "m", "f"]),
    }
    res = tabular_metrics(recon, truth)
    assert res["columns"]["age"] == {"kind": "continuous", "mae": pytest.approx(1.0)}
    assert res["columns"]["job"]["accuracy"] == pytest.approx(0.75)
    assert res["columns"]["sex"]["accuracy"] == pytest.approx(0.5)
    assert res["discrete_accuracy"] == pytest.approx(5 / 8)
    assert res["continuous_mae"] == {"age": pytest.approx(1.0)}
    json.dumps(res)


def test_tabular_metrics_with_permutation_and_missing_rows():
    truth = {"x": np.array([1.0, 2.0, 3.0]), "c": np.array(["u", "v", "w"])}
    recon = {"x": np.array([3.5, 1.0]), "c": np.array(["w", "u"])}
    res = tabular_metrics(recon, truth, permutation=np.array([1, -1, 0]))
    assert res["continuous_mae"]["x"] == pytest.approx(0.25)  # matched rows only
    assert res["discrete_accuracy"] == pytest.approx(2 / 3)  # the missing row counts as wrong
    assert res["n_matched"] == 2 and res["n_rows"] == 3
    assert tabular_metrics({"x": truth["x"]}, {"x": truth["x"]})["discrete_accuracy"] is None
    with pytest.raises(ValueError, match="column"):
        tabular_metrics({"x": truth["x"]}, truth)
