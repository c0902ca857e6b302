"""The benchmark scripts run like a user would run them and write the documented records."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_bench_kernel_writes_valid_records(tmp_path):
    out = tmp_path / "k.json"
    subprocess.run([sys.executable, str(BENCH / "bench_kernel.py"), "--configs", "8:120:float64",
                    "--repeats", "1", "--json", str(out), "--plot", str(tmp_path / "k.png")],
                   check=True, capture_output=True, timeout=300)
    records = json.loads(out.read_text())
    assert isinstance(records, list)
    backends = {r["backend"] for r in records}
    assert {"cpu", "numpy-batched", "torch-batched"} <= backends
    for r in records:
        assert {"backend", "b", "m", "dtype", "samples", "seconds", "samples_per_s"} <= set(r)
        assert r["b"] == 8 and r["m"] == 120 and r["dtype"] == "float64"
        assert r["samples_per_s"] == pytest.approx(r["samples"] / r["seconds"])
    base = next(r for r in records if r["backend"] == "numpy-batched")
    for r in (r for r in records if r["backend"] == "cpu"):
        assert r["ratio_vs_baseline"] == pytest.approx(r["samples_per_s"] / base["samples_per_s"])
    assert (tmp_path / "k.png").stat().st_size > 1000


def test_bench_robust_tables_and_plot(tmp_path):
    out = tmp_path / "r.json"
    subprocess.run([sys.executable, str(BENCH / "bench_robust.py"), "--datasets", "digits",
                    "--sections", "dp,layers", "--batch-size", "6", "--batches", "1",
                    "--time-limit", "3", "--json", str(out), "--plot", str(tmp_path / "r.png"),
                    "--markdown", str(tmp_path / "r.md")],
                   check=True, capture_output=True, timeout=600)
    records = json.loads(out.read_text())
    dp = {(r["setting"]["clip"], r["setting"]["sigma"]): r for r in records if r["section"] == "dp"}
    assert len(dp) == 10 and {r["section"] for r in records} == {"dp", "layers"}
    clean, noisy = dp[(1.0, 0.0)], dp[(1.0, 1e-5)]
    assert clean["certified_fraction"] == 1 and clean["psnr"] > 100
    assert noisy["certified_fraction"] == 0 and noisy["noise_level"] > 10 * clean["noise_level"]
    # A batch scores exactly when it is complete: no partial guess, no missing score.
    for r in (row for rec in records for row in rec["per_batch"]):
        assert (r["rel_err_median"] is not None) == r["complete"]
        if not r["complete"]:
            assert r["psnr"] is None and r["recovered_fraction"] == 0.0
    layers = [r for r in records if r["section"] == "layers"]
    assert [r["setting"]["layer"] for r in layers] == [1, 2, 3, 4, 5]
    assert all(r["psnr"] is None for r in layers[1:])     # deeper layers: features, not pixels
    assert "| clip | sigma | PSNR dB" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "r.png").stat().st_size > 1000


def test_bench_large_batch_skips_after_a_failure(tmp_path):
    out = tmp_path / "l.json"
    subprocess.run([sys.executable, str(BENCH / "bench_large_batch.py"), "--bs", "4,40,50",
                    "--ms", "60", "--kinds", "zero-mean", "--dtypes", "float64", "--methods",
                    "sample", "--batches", "1", "--time-limit", "2", "--json", str(out)],
                   check=True, capture_output=True, timeout=300)
    records = {r["b"]: r for r in json.loads(out.read_text())}
    assert records[4]["complete_fraction"] == 1 and not records[4]["skipped"]
    assert records[40]["complete_fraction"] == 0 and not records[40]["skipped"]
    assert records[50]["skipped"] and records[50]["per_batch"] == []
    assert (tmp_path / "l_sample_zero-mean_float64.png").stat().st_size > 1000


def test_bench_trained_table_plot_and_redraw(tmp_path):
    out = tmp_path / "t.json"
    args = ["--dataset", "digits", "--train", "1000", "--models", "fcnn200", "--checkpoints", "0", "0.5",
            "--bs", "4", "--batches", "1", "--time-limit", "20"]
    subprocess.run([sys.executable, str(BENCH / "bench_trained.py"), *args, "--json", str(out),
                    "--markdown", str(tmp_path / "t.md"), "--plot", str(tmp_path / "t.png")],
                   check=True, capture_output=True, timeout=600)
    saved = json.loads(out.read_text())
    assert saved["command"].endswith("--plot " + str(tmp_path / "t.png"))
    assert saved["machine"]["cores"] >= 1
    records = saved["records"]
    assert [(r["epochs"], r["b"]) for r in records] == [(0, 4), (0.5, 4)]
    init = records[0]["batches"][0]
    assert init["verdict"] == "certified" and init["within_1e-3"] == 4     # random init, b = 4
    for r in records:
        row = r["batches"][0]
        assert 0 <= row["within_1e-3"] <= row["within_1e-2"] <= 4
        assert (row["diagnosis"] is None) == (row["verdict"] == "certified")
    assert (tmp_path / "t.png").stat().st_size > 1000
    redraw = subprocess.run([sys.executable, str(BENCH / "bench_trained.py"), "--from-json", str(out)],
                            check=True, capture_output=True, text=True, timeout=120)
    assert (tmp_path / "t.md").read_text() in redraw.stdout
