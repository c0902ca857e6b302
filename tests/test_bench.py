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
