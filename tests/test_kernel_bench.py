"""bench/bench_kernel.py: output folders checked before the work, the plot's colours."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _module():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_kernel", BENCH / "bench_kernel.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_output_folder_is_created_or_fails_before_the_work(tmp_path):
    # An impossible folder fails at once (not after the measurements) ...
    r = subprocess.run([sys.executable, str(BENCH / "bench_kernel.py"), "--configs",
                        "8:120:float64", "--json", "/proc/no/such/k.json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "--json" in r.stderr and "numpy-batched" not in r.stdout
    # ... and a missing one is created.
    mod = _module()
    mod._prepare_output(str(tmp_path / "a" / "b" / "k.png"), "plot")
    assert (tmp_path / "a" / "b").is_dir()


def test_plot_colours_match_across_panels(tmp_path):
    pytest.importorskip("matplotlib")
    mod = _module()
    rec = lambda backend, dtype, b, rate, **kw: dict(backend=backend, dtype=dtype, b=b, m=200,  # noqa: E731
                                                     samples_per_s=rate, **kw)
    records = [rec("numpy-batched", "float64", 8, 1e4), rec("numpy-batched", "float64", 20, 5e3),
               rec("cpu", "float64", 8, 1e6, threads=2), rec("cpu", "float64", 20, 5e5, threads=2),
               # float32 lacks the numpy series: colours must not shift
               rec("cpu", "float32", 8, 2e6, threads=2), rec("cpu", "float32", 20, 1e6, threads=2)]
    import matplotlib.pyplot as plt

    captured = {}
    orig = plt.Figure.savefig

    def grab(fig, *a, **k):
        captured["fig"] = fig
        return orig(fig, *a, **k)

    plt.Figure.savefig = grab
    try:
        mod.plot(records, tmp_path / "k.png")
    finally:
        plt.Figure.savefig = orig
    fig = captured["fig"]
    colour = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label()
            assert colour.setdefault(label, line.get_color()) == line.get_color(), label
    assert len(fig.legends) == 1
    assert (tmp_path / "k.png").stat().st_size > 1000


def test_console_names_the_thread_count(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / "bench_kernel.py"), "--configs",
                        "8:120:float64", "--repeats", "1", "--no-torch"],
                       capture_output=True, text=True, timeout=300, check=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("cpu")]
    assert any("(1 thr)" in ln for ln in lines) and len(lines) == 2


def test_markdown_table_has_one_row_per_configuration():
    mod = _module()
    rec = lambda backend, b, rate, **kw: dict(backend=backend, dtype="float64", b=b, m=200,  # noqa: E731
                                              samples_per_s=rate, **kw)
    records = [rec("numpy-batched", 20, 1e4), rec("cpu", 20, 2e6, threads=2, ratio_vs_baseline=200.0,
                                                  cpu_per_wall=1.93),
               rec("cpu", 20, 1e6, threads=1, ratio_vs_baseline=100.0, cpu_per_wall=1.0),
               rec("cpu", 8, 4e6, threads=2, ratio_vs_baseline=40.0, cpu_per_wall=1.9)]
    lines = mod.markdown(records).splitlines()
    assert len(lines) == 2 + 2
    assert lines[2].startswith("| float64 | 200 | 8 | - | - | - | 4e+06 | 40.0x | 1.90 |")
    assert lines[3] == "| float64 | 200 | 20 | 1e+04 | - | 1e+06 | 2e+06 | 200.0x | 1.93 |"
