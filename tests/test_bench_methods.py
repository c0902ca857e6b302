"""bench_attack.py with several methods: the same batches through each, records and grids."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from spear import report

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_bench_attack_runs_methods_side_by_side(tmp_path):
    out = tmp_path / "m.json"
    subprocess.run([sys.executable, str(BENCH / "bench_attack.py"), "--datasets", "digits", "--batch-sizes", "3",
                    "--batches", "1", "--depth", "3", "--methods", "spear,inverting-gradients",
                    "--ig-iterations", "20", "--threads", "1", "--grids", str(tmp_path / "g"), "--json", str(out)],
                   check=True, capture_output=True, timeout=300)
    records = json.loads(out.read_text())
    assert [r["method"] for r in records] == ["spear", "inverting-gradients"]
    spear_rec, ig = records
    assert spear_rec["recovered_fraction"] == 1.0 and ig["recovered_fraction"] == 0.0
    assert ig["ig_iterations"] == 20 and ig["psnr"] < spear_rec["psnr"] and ig["ssim"] is not None
    assert (tmp_path / "g" / "digits_fcnn_b3_batch0.png").exists()


def test_comparison_grid_puts_each_method_under_the_originals(tmp_path):
    rng = np.random.default_rng(0)
    truth = rng.random((3, 3, 4, 4))
    exact = truth[[1, 2, 0]]
    p = report.comparison_grid(truth, [("exact", exact, np.array([2, 0, 1])), ("none", None, None)],
                               tmp_path / "c.png", cell=16, gap=2)
    img = np.asarray(Image.open(p).convert("RGB"), dtype=np.int16)
    h = w = 16
    for i in range(3):
        x0 = 130 + 2 + i * (w + 2)
        top, mid, low = (img[2 + r * (h + 2):2 + r * (h + 2) + h, x0:x0 + w] for r in range(3))
        assert np.abs(top - mid).max() <= 1
        assert (low == 128).all()
