"""The command line, the experiment wiring and the reports, end to end."""
from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from PIL import Image

from spear import __version__, report
from spear.cli import main

SUMMARY_KEYS = {"batch_size", "batches", "recovered_fraction", "psnr_mean", "certified_fraction",
                "seconds_per_batch", "config", "rel_err_max", "image_shape", "device", "definitions"}


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def test_demo_recovers_the_batch_and_draws_it(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    s = _summary(out)
    assert SUMMARY_KEYS <= set(s)
    assert s["batch_size"] == 12 and s["batches"] == 1
    assert s["recovered_fraction"] == 1.0 and s["certified_fraction"] == 1.0
    assert s["psnr_mean"] > 100
    printed = capsys.readouterr().out
    assert "recovered         100.0%" in printed and "certified         100%" in printed
    assert s["device"] in ("cpu", "cuda") and s["image_shape"] == [1, 8, 8]
    assert 0 <= s["rel_err_max"] < 1e-3 and s["per_batch"][0]["rel_err_max"] == s["rel_err_max"]
    # The picture: title band, then reconstructed row above original row; exact recovery ->
    # identical pixels.
    img = np.asarray(Image.open(out / "batch_000.png").convert("L"), dtype=np.int16)
    img = img[report.TITLE_HEIGHT:]
    cell, gap, left = 64, 2, 100
    top = img[gap:gap + cell, left + gap:left + gap + 12 * (cell + gap)]
    bottom = img[2 * gap + cell:2 * gap + 2 * cell, left + gap:left + gap + 12 * (cell + gap)]
    assert top.std() > 10                        # not a blank picture
    assert np.abs(top - bottom).max() <= 1


def test_attack_writes_consistent_reports(tmp_path):
    out = tmp_path / "run"
    code = main(["attack", "--dataset", "digits", "--batch-size", "6", "--batches", "2",
                 "--depth", "4", "--out", str(out)])
    assert code == 0
    s = _summary(out)
    with (out / "batches.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 == s["batches"] == len(s["per_batch"])
    assert s["config"]["depth"] == 4 and s["config"]["batch_size"] == 6
    assert {r["certified"] for r in rows} == {"True"}
    assert s["recovered_fraction"] == 1.0
    assert sorted(p.name for p in out.glob("batch_*.png")) == ["batch_000.png", "batch_001.png"]


def test_deeper_layer_recovers_features(tmp_path):
    out = tmp_path / "deep"
    assert main(["attack", "--dataset", "digits", "--batch-size", "6", "--layer", "2",
                 "--depth", "6", "--out", str(out)]) == 0
    s = _summary(out)
    assert s["recovered_fraction"] == 1.0 and s["psnr_mean"] is None
    assert (out / "batch_000_features.csv").exists()


def test_dp_noise_is_never_certified_and_is_measured(tmp_path):
    clean, noisy = tmp_path / "clean", tmp_path / "dp"
    common = ["attack", "--dataset", "digits", "--batch-size", "6", "--depth", "3", "--time-limit", "5"]
    assert main([*common, "--out", str(clean)]) == 0
    assert main([*common, "--dp-clip", "1.0", "--dp-sigma", "0.01", "--out", str(noisy)]) == 0
    c, n = _summary(clean)["per_batch"][0], _summary(noisy)["per_batch"][0]
    # Exactness cannot be proven under DP noise; the noise shows in the spectrum.
    assert c["certified"] is True and n["certified"] is False
    assert n["noise_level"] > 1e3 * c["noise_level"]


def test_an_unrecovered_batch_claims_nothing_and_says_why(tmp_path):
    out = tmp_path / "none"
    # No sampling budget and no dictionary: no direction can be found.
    assert main(["attack", "--dataset", "digits", "--batch-size", "6", "--depth", "3", "--search", "sample",
                 "--max-samples", "0", "--out", str(out)]) == 0
    s = _summary(out)
    row = s["per_batch"][0]
    assert row["complete"] is False and row["certified"] is False
    assert s["recovered_fraction"] == 0.0 and s["psnr_mean"] is None and s["rel_err_max"] is None
    page = (out / "report.html").read_text()
    assert "batch not recovered" in page and "<h3>Diagnosis</h3>" in page
    diagnosis = re.search(r"<p class='diagnosis'>(.*?)</p>", page, re.S).group(1)
    assert "6" in diagnosis                    # names the batch size it fell short of
    # The grid shows grey cells where nothing was recovered.
    img = np.asarray(Image.open(out / "batch_000.png").convert("RGB"))[report.TITLE_HEIGHT:]
    assert (img[2:2 + 64, 102:102 + 64] == 128).all()


def test_html_report_embeds_the_pictures_and_verdicts(tmp_path):
    out = tmp_path / "html"
    assert main(["attack", "--dataset", "digits", "--batch-size", "4", "--depth", "3", "--batches", "2",
                 "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    images = re.findall(r"<img [^>]*src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 2
    import base64

    assert base64.b64decode(images[0]) == (out / "batch_000.png").read_bytes()
    assert page.count("batch recovered exactly and certified") == 2
    assert "digits" in page and "b = 4" in page and "2/2 batches certified" in page
    assert "<th>relative error</th>" in page and "what it means" in page
    assert "fcnn (width 200, depth 3) on digits, linear layer 0 (200 x 64), protocol fedsgd" in page


def test_terminal_summary_says_what_was_attacked(tmp_path, capsys):
    assert main(["attack", "--dataset", "digits", "--batch-size", "4", "--depth", "3", "--protocol", "fedavg",
                 "--epochs", "2", "--mini-batch", "2", "--out", str(tmp_path / "t")]) == 0
    printed = capsys.readouterr()
    assert ("attacked          fcnn (width 200, depth 3) on digits, linear layer 0 (200 x 64), protocol "
            "fedavg (epochs 2, mini-batch 2, lr 0.01)") in printed.out
    # Not a terminal: no progress bars, no escape codes.
    assert "\x1b[" not in printed.err and "\r" not in printed.err


def test_out_refuses_a_non_empty_folder_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "old_batch_007.png").write_bytes(b"x")
    args = ["attack", "--dataset", "digits", "--batch-size", "3", "--depth", "3", "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--overwrite" in err and err.count("\n") == 1
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "old_batch_007.png").exists() and (out / "summary.json").exists()
    afile = tmp_path / "f"
    afile.write_text("")
    assert main(["attack", "--dataset", "digits", "--out", str(afile)]) == 2
    err = capsys.readouterr().err
    assert "is a file" in err and err.count("\n") == 1


def test_version_and_help_show_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"spear {__version__}"
    with pytest.raises(SystemExit):
        main(["attack", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "seconds per batch before giving up (default: 300.0)" in text
    assert "(default: digits)" in text and "(default: 16,32)" in text
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "(default: 12)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("args,needle", [
    (["--dataset", "mnist", "--data-root", "/nonexistent/mnist"], "/nonexistent/mnist"),
    (["--dataset", "digits", "--batch-size", "65"], "batch size 65"),
    (["--dataset", "digits", "--layer", "5", "--depth", "6"], "layer 5"),
    (["--dataset", "digits", "--batches", "0"], "--batches"),
])
def test_errors_are_one_clear_line(tmp_path, capsys, args, needle):
    assert main(["attack", *args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spear: error:") and needle in err and "\n" not in err


def test_unknown_dataset_is_rejected(capsys):
    with pytest.raises(SystemExit) as e:
        main(["attack", "--dataset", "svhn"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_report_grid_follows_the_matching(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random((3, 3, 4, 5))
    recon = truth[[2, 0, 1]]                       # truth i is recon order[i]
    order = np.array([1, 2, 0])
    p = report.image_grid(recon, truth, tmp_path / "g.png", order=order, cell=20, gap=2)
    img = np.asarray(Image.open(p).convert("RGB"), dtype=np.int16)
    scale = 4                                      # 20 // max(4, 5)
    h, w = 4 * scale, 5 * scale
    for i in range(3):
        x0 = 100 + 2 + i * (w + 2)
        top, bottom = img[2:2 + h, x0:x0 + w], img[2 + h + 2:2 + 2 * h + 2, x0:x0 + w]
        assert np.abs(top - bottom).max() <= 1


def test_report_json_is_strict(tmp_path):
    p = report.write_json({"a": np.float64("nan"), "b": np.arange(3), "c": np.bool_(True)},
                          tmp_path / "s.json")
    assert json.loads(p.read_text()) == {"a": None, "b": [0, 1, 2], "c": True}


# --- real datasets (skipped without ../shared/datasets) ---------------------------------

@pytest.mark.parametrize("dataset,sub,extra", [
    ("mnist", "mnist", []),
    ("tiny-imagenet", "tiny-imagenet-200", []),
    ("imagenet", "imagenet-sample", ["--image-size", "224"]),
    ("adult", "adult", []),
])
def test_attack_on_real_data(tmp_path, datasets_root, dataset, sub, extra):
    out = tmp_path / dataset
    assert main(["attack", "--dataset", dataset, "--data-root", str(datasets_root / sub),
                 "--batch-size", "8", "--depth", "3", "--out", str(out), *extra]) == 0
    s = _summary(out)
    assert s["recovered_fraction"] == 1.0 and s["certified_fraction"] == 1.0
    if dataset == "adult":
        assert s["psnr_mean"] is None
        assert s["per_batch"][0]["discrete_accuracy"] == 1.0
        assert (out / "batch_000_rows.csv").exists()
    else:
        assert s["psnr_mean"] > 80


def test_inverting_gradients_method_writes_outputs(tmp_path):
    out = tmp_path / "ig"
    assert main(["attack", "--dataset", "digits", "--batch-size", "2", "--depth", "3", "--width", "32",
                 "--method", "inverting-gradients", "--ig-iterations", "30", "--out", str(out)]) == 0
    s = _summary(out)
    assert s["config"]["method"] == "inverting-gradients" and s["config"]["search"] == "auto"
    row = s["per_batch"][0]
    assert row["method"] == "inverting-gradients" and row["complete"] is False and row["certified"] is None
    assert row["optimization_loss"] is not None and s["psnr_mean"] is not None
    assert (out / "batch_000.png").exists()


def test_search_flag_is_spears_direction_source(tmp_path):
    out = tmp_path / "s"
    assert main(["attack", "--dataset", "digits", "--batch-size", "4", "--depth", "3", "--search", "sample",
                 "--out", str(out)]) == 0
    s = _summary(out)
    assert s["config"]["search"] == "sample" and s["config"]["method"] == "spear"
    assert s["recovered_fraction"] == 1.0


def test_hybrid_falls_back_to_gradient_matching_from_partial_directions(tmp_path):
    out = tmp_path / "h"
    assert main(["attack", "--dataset", "digits", "--batch-size", "6", "--depth", "3", "--method", "hybrid",
                 "--search", "sample", "--max-samples", "0", "--ig-iterations", "30", "--out", str(out)]) == 0
    row = _summary(out)["per_batch"][0]
    assert row["complete"] is False and row["optimization_loss"] is not None and row["psnr_mean"] is not None


def test_hybrid_needs_the_first_fcnn_layer(tmp_path, capsys):
    assert main(["attack", "--dataset", "digits", "--method", "hybrid", "--layer", "1",
                 "--out", str(tmp_path / "x")]) == 2
    assert "hybrid" in capsys.readouterr().err


def test_cnn_path_recovers_features_exactly_then_images(tmp_path, capsys):
    out = tmp_path / "vgg"
    assert main(["attack", "--dataset", "digits", "--model", "vgg", "--batch-size", "4", "--depth", "3",
                 "--feature-iterations", "30", "--refine-iterations", "10", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "certified         100% of batches (the features" in printed
    assert "features recovered exactly and certified; images by feature inversion, PSNR" in (
        out / "report.html").read_text()
    s = _summary(out)
    row = s["per_batch"][0]
    assert s["config"]["model"] == "vgg" and row["certified"] is True
    assert row["feature_recovered_fraction"] == 1.0 and row["feature_rel_err_max"] < 1e-3
    assert row["psnr_mean"] is not None and (out / "batch_000.png").exists()
    assert row["psnr_before_refine"] is not None and row["feature_inversion_rel_err"] is not None


def test_bad_channels_are_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["attack", "--dataset", "digits", "--model", "vgg", "--channels", "8,x", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--channels" in err and "Traceback" not in err
