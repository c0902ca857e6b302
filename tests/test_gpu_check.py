"""bench/gpu_check.py, the one command for a GPU machine: its argument handling, and its
CPU-side steps run here (no GPU: the GPU steps are recorded as skipped, not failed)."""
from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import gpu_check  # noqa: E402


def test_default_steps_leave_the_attack_out_without_data():
    assert gpu_check.parse_args([]).steps == [s for s in gpu_check.STEPS if s != "attack"]


def test_bad_arguments_are_one_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--steps", "build,frobnicate"])
    assert "unknown step(s) frobnicate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--steps", "attack"])
    assert "needs --data-root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu_check.parse_args(["--steps", "attack", "--data-root", str(tmp_path / "nope")])
    assert "is not a folder" in capsys.readouterr().err


def test_without_a_gpu_the_gpu_steps_are_skipped_and_the_bundle_fits(tmp_path, monkeypatch):
    import spear

    if spear.cuda_available():
        pytest.skip("a GPU is present: this checks the machine without one")
    out, bundle = tmp_path / "work", tmp_path / "bundle"
    rc = gpu_check.main(["--steps", "sanitize,ncu", "--out", str(out), "--bundle", str(bundle)])
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["device"]["cuda_available"] is False
    assert report["steps"]["sanitize"]["skipped"] == "no GPU"
    assert report["steps"]["ncu"]["skipped"] == "no GPU"
    assert rc == 0 and report["passed"]                # nothing ran, nothing failed
    files = sorted(p.name for p in bundle.iterdir())
    assert "gpu_check.json" in files and "gpu_check_logs.tar.gz" in files and len(files) <= 8
    with tarfile.open(bundle / "gpu_check_logs.tar.gz") as tar:
        assert "gpu_check/gpu_check.json" in tar.getnames()
