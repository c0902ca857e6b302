"""One command for a GPU machine: build, test, sanitize and benchmark the CUDA kernel.

For a bare machine whose image has nvcc, CMake, ninja, pybind11, scikit-build-core, CuPy
(cuda13x), torch and pytest but no network:

    bash bench/gpu_check.sh            # or: python bench/gpu_check.py [--out DIR]

1. builds the package from this working tree into a fresh virtual environment that sees
   the system packages (pip install --no-build-isolation --no-deps ., CUDA required);
2. runs tests/test_gpu.py and tests/test_kernel.py (junit XML and log kept);
3. runs bench/gpu_sanitize.py under compute-sanitizer memcheck, racecheck and initcheck at
   a small and a large b;
4. runs bench/bench_kernel.py with the CUDA kernel and the torch-CUDA batched baseline in
   the same run (JSON and plot);
and writes everything under one folder ($OUT when set, else bench/results/gpu_check),
with gpu_check.json: device name, driver, CUDA versions, date, each step's command, exit
status, time and output tail, the kernel's registers and occupancy per b, and the
benchmark records. Steps go on after a failure; the exit status says whether all passed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL_B, LARGE_B = 8, 64     # the smallest and largest kernel variants (BMAX 8 and 64)
BENCH_CONFIGS = "8:200:float64,20:200:float64,20:200:float32,32:200:float64,20:2000:float64"


def _run(cmd, log: Path, env=None, timeout=3600, cwd=ROOT) -> dict:
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = 124, f"timed out after {timeout} s\n{e.stdout or ''}{e.stderr or ''}"
    except FileNotFoundError as e:
        rc, out = 127, str(e)
    log.write_text(out)
    return {"command": " ".join(map(str, cmd)), "rc": rc, "seconds": round(time.time() - t0, 1),
            "log": log.name, "tail": out[-3000:]}


def _tool_version(cmd) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"unavailable ({e.__class__.__name__})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "bench/results/gpu_check"))
    p.add_argument("--skip-build", action="store_true", help="use the spear already installed")
    p.add_argument("--quick", action="store_true", help="fewer benchmark configurations")
    a = p.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "python": platform.python_version(),
        "nvidia_smi": _tool_version(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                     "--format=csv,noheader"]),
        "nvcc": _tool_version(["nvcc", "--version"]).splitlines()[-1:] or "",
        "git_commit": _tool_version(["git", "-C", str(ROOT), "rev-parse", "HEAD"]),
        "steps": {},
    }
    summary = out / "gpu_check.json"

    def save():
        summary.write_text(json.dumps(report, indent=1) + "\n")

    # 1. Build into a fresh venv that sees the system packages (CuPy, torch, pytest).
    py = sys.executable
    if not a.skip_build:
        venv = Path(tempfile.mkdtemp(prefix="spear-gpu-check-")) / "venv"
        report["steps"]["venv"] = _run([sys.executable, "-m", "venv", "--system-site-packages",
                                        str(venv)], out / "venv.log")
        py = str(venv / "bin" / "python")
        env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 4)}
        report["steps"]["build"] = _run(
            [py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index",
             "-Ccmake.define.SPEAR_CUDA=ON", "-Cbuild-dir=" + str(venv.parent / "build"), "."],
            out / "build.log", env=env)
        save()
        if report["steps"]["build"]["rc"] != 0:
            print(f"build failed: see {out / 'build.log'}", file=sys.stderr)
            return 1
    # Run from outside the source tree so that the installed package is imported.
    probe = ("import json, spear; from spear import _core as c; d = dict(built_with_cuda="
             "c.built_with_cuda, cuda_available=spear.cuda_available(), reason="
             "c.cuda_unavailable_reason(), cpu_simd=c.cpu_simd(), spear_file=spear.__file__)\n"
             "if c.built_with_cuda:\n d.update(runtime=c.cuda_runtime_version(), "
             "driver=c.cuda_driver_version())\n"
             "if spear.cuda_available():\n d['device'] = c.cuda_device_name(0)\n"
             " d['kernel'] = {f'{dt} b={b}': c.cuda_kernel_info(dt, b) for dt in ('float32', "
             "'float64') for b in (8, 16, 32, 64)}\nprint(json.dumps(d))")
    info = _run([py, "-c", probe], out / "device.log", cwd=out)
    try:
        report["device"] = json.loads(info["tail"].strip().splitlines()[-1])
    except Exception:  # noqa: BLE001
        report["device"] = {"error": info["tail"]}
    save()
    gpu = bool(report["device"].get("cuda_available"))
    if not gpu:
        print("no usable CUDA device: " + str(report["device"].get("reason")), file=sys.stderr)

    # 2. Tests (the GPU ones skip without a GPU).
    report["steps"]["tests"] = _run(
        [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", str(out / "tests.xml"),
         str(ROOT / "tests/test_gpu.py"), str(ROOT / "tests/test_kernel.py")],
        out / "tests.log", cwd=ROOT / "tests")
    save()

    # 3. compute-sanitizer at a small and a large b.
    sanitizer = shutil.which("compute-sanitizer")
    if gpu and sanitizer:
        for tool in ("memcheck", "racecheck", "initcheck"):
            for b in (SMALL_B, LARGE_B):
                report["steps"][f"sanitizer_{tool}_b{b}"] = _run(
                    [sanitizer, "--tool", tool, "--error-exitcode", "99",
                     py, str(ROOT / "bench/gpu_sanitize.py"), "--b", str(b)],
                    out / f"sanitizer_{tool}_b{b}.log")
                save()
    else:
        report["steps"]["sanitizer"] = {"rc": None, "skipped": "no GPU" if not gpu else
                                        "compute-sanitizer not on PATH"}

    # 4. Benchmark: CUDA kernel and torch-CUDA baseline in the same run (plus the CPU rows).
    configs = "20:200:float64,20:200:float32" if a.quick else BENCH_CONFIGS
    report["steps"]["bench"] = _run(
        [py, str(ROOT / "bench/bench_kernel.py"), "--configs", configs, "--no-torch",
         "--json", str(out / "kernel_gpu.json"), "--plot", str(out / "kernel_gpu.png")],
        out / "bench.log")
    try:
        report["bench"] = json.loads((out / "kernel_gpu.json").read_text())
    except Exception:  # noqa: BLE001
        report["bench"] = None
    steps = [s for s in report["steps"].values() if s.get("rc") is not None]
    report["passed"] = all(s["rc"] == 0 for s in steps)
    save()
    print(json.dumps({k: (v.get("rc"), v.get("seconds")) for k, v in report["steps"].items()},
                     indent=1))
    print(f"report: {summary}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
