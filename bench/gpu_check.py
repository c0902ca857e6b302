"""One command for a GPU machine: build, test, sanitize, profile and benchmark spear on CUDA.

For a bare machine whose image has nvcc, CMake, ninja, pybind11, scikit-build-core, CuPy
(cuda13x), torch and pytest but no network:

    bash bench/gpu_check.sh --data-root .device-data/imagenet-sample --bundle "$OUT"

Steps (``--steps`` picks and orders them; each goes on after a failure):

  build     the package from this working tree into the running Python's environment
            (pip install --no-build-isolation --no-deps, SPEAR_CUDA=ON, sm_90); with
            --reuse, the build a previous call left on a warm machine is used
  tests     tests/test_gpu.py (junit XML and log kept; --all-tests adds tests/test_kernel.py,
            whose CPU checks CI runs anyway)
  sanitize  bench/gpu_sanitize.py under compute-sanitizer memcheck, racecheck, initcheck
            at a small and a large b
  ncu       Nsight Compute on one full-size launch of the kernel at b = 20, m = 200, fp32
  scratch   bench/gpu_scratch_ab.py: pass 1 with its scratch in shared and in local memory,
            side by side (samples/s, identical results)
  bench     bench/bench_kernel.py: the CUDA kernel and the torch-CUDA batched baseline in
            the same run (JSON and plot)
  attack    ``spear attack --device cuda`` on the ImageNet sample at 224 and 720 px, b = 20,
            width 200 (needs --data-root)
  large     bench/bench_large_batch.py --device cuda at b = 100 (m = 2000) and b = 256
            (m = 4000): the dictionary rounds on CuPy

Everything lands under --out; gpu_check.json holds the device name, driver, CUDA versions,
date, each step's command, exit status, time and output tail, the kernel's registers and
occupancy per b, and every benchmark record. ``--bundle DIR`` copies the JSON records, the
plot and one archive of all logs there (at most 8 files: what a device call brings back).
A step that would start after ``--deadline`` seconds is skipped and recorded as such.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("build", "tests", "sanitize", "ncu", "scratch", "bench", "attack", "large")
# The smallest and largest local-scratch variants (BMAX 8 and 64), and b = 16, whose pass 1
# keeps its scratch in shared memory at the sanitizer run's m = 64.
SANITIZE_BS = (8, 16, 64)
BENCH_CONFIGS = "8:200:float64,20:200:float64,20:200:float32,32:200:float32,20:2000:float32"
# One full-size launch for Nsight Compute (b = 20, m = 200, fp32: the target).
NCU_PROBE = ("import sys; sys.path.insert(0, 'bench'); import numpy as np, cupy as cp, spear; "
             "from common import planted_L; L = cp.asarray(planted_L(200, 20, seed=20, "
             "dtype=np.float32)); spear.sample_directions(L, 50_000_000); "
             "cp.cuda.Device().synchronize()")


def _run(cmd, log: Path, env=None, timeout=3600, cwd=ROOT) -> dict:
    t0 = time.time()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = p.returncode, p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        def text(x):
            return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
        rc, out = 124, f"timed out after {timeout} s\n{text(e.stdout)}{text(e.stderr)}"
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


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except Exception:  # noqa: BLE001
        return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "bench/results/gpu_check"),
                   help="work folder for every log and record")
    p.add_argument("--bundle", default=None,
                   help="copy the records and one archive of the logs here (at most 8 files)")
    p.add_argument("--steps", default=None,
                   help=f"comma-separated, any of {', '.join(STEPS)} (default: all; attack only "
                        "with --data-root)")
    p.add_argument("--reuse", action="store_true",
                   help="build only if no CUDA-built spear is installed yet (a warm machine's "
                        "previous call)")
    p.add_argument("--quick", action="store_true", help="fewer benchmark configurations")
    p.add_argument("--all-tests", action="store_true", help="run tests/test_kernel.py there too")
    p.add_argument("--data-root", default=None, help="ImageNet sample folder for the attack step")
    p.add_argument("--deadline", type=float, default=560.0,
                   help="seconds after which no further step starts")
    p.add_argument("--large-time-limit", type=float, default=120.0,
                   help="seconds per batch in the large step (b = 256 gets twice this)")
    a = p.parse_args(argv)
    if a.steps is None:
        steps = [s for s in STEPS if s != "attack" or a.data_root]
    else:
        steps = [s for s in a.steps.split(",") if s]
    bad = [s for s in steps if s not in STEPS]
    if bad:
        p.error(f"unknown step(s) {', '.join(bad)}; choose from {', '.join(STEPS)}")
    if "attack" in steps and not a.data_root:
        p.error("the attack step needs --data-root (a folder of ImageNet JPEGs)")
    if a.data_root and not Path(a.data_root).is_dir():
        p.error(f"--data-root {a.data_root} is not a folder")
    a.steps = steps
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    start = time.time()
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

    def step(name, cmd, timeout, **kw):
        left = a.deadline - (time.time() - start)
        if left < 10:
            report["steps"][name] = {"rc": None, "skipped": f"deadline ({a.deadline:.0f} s) reached"}
        else:
            report["steps"][name] = _run(cmd, out / f"{name}.log", timeout=min(timeout, left), **kw)
        save()
        return report["steps"][name]

    # Into the running interpreter's environment: the image's python is itself a virtual
    # environment, and a venv made from it would not see its packages (scikit-build-core).
    py = sys.executable
    have = subprocess.run([py, "-c", "import spear._core as c; assert c.built_with_cuda"],
                          cwd=out, capture_output=True).returncode == 0
    if "build" in a.steps and not (have and a.reuse):
        env = {**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 4)}
        # sm_90 only: the machine is an H100/H200, and one architecture halves the build.
        b = step("build", [py, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                           "--no-index", "-Ccmake.define.SPEAR_CUDA=ON",
                           "-Ccmake.define.CMAKE_CUDA_ARCHITECTURES=90",
                           "-Cbuild-dir=/tmp/spear-gpu-build", "."], 400, env=env)
        if b.get("rc") != 0:
            print(f"build failed: see {out / 'build.log'}", file=sys.stderr)
            return _finish(report, save, out, a.bundle)

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
    sanitizer, ncu = shutil.which("compute-sanitizer"), shutil.which("ncu")

    for name in a.steps:
        if name == "tests":
            step("tests", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml",
                           str(out / "tests.xml"), str(ROOT / "tests/test_gpu.py")]
                 + ([str(ROOT / "tests/test_kernel.py")] if a.all_tests else []), 300,
                 cwd=ROOT / "tests")
        elif name == "sanitize":
            if not (gpu and sanitizer):
                report["steps"]["sanitize"] = {"rc": None, "skipped": "no GPU" if not gpu else
                                               "compute-sanitizer not on PATH"}
                continue
            for tool in ("memcheck", "racecheck", "initcheck"):
                for b in SANITIZE_BS:
                    step(f"sanitizer_{tool}_b{b}",
                         [sanitizer, "--tool", tool, "--error-exitcode", "99", py,
                          str(ROOT / "bench/gpu_sanitize.py"), "--b", str(b),
                          "--samples", "2048"], 120)
        elif name == "ncu":
            if not (gpu and ncu):
                report["steps"]["ncu"] = {"rc": None, "skipped": "no GPU" if not gpu else
                                          "ncu not on PATH"}
                continue
            step("ncu", [ncu, "--clock-control", "none", "--target-processes", "all",
                         "-k", "regex:evaluate_kernel", "-c", "1", "--section", "SpeedOfLight",
                         "--section", "Occupancy", "--section", "LaunchStats",
                         "--section", "MemoryWorkloadAnalysis", "--section", "ComputeWorkloadAnalysis",
                         "--section", "SchedulerStats", "--section", "WarpStateStats",
                         py, "-c", NCU_PROBE], 180)
        elif name == "scratch":
            step("scratch", [py, str(ROOT / "bench/gpu_scratch_ab.py"),
                             "--json", str(out / "scratch_ab.json")], 240)
            report["scratch"] = _load(out / "scratch_ab.json")
        elif name == "bench":
            configs = "20:200:float64,20:200:float32" if a.quick else BENCH_CONFIGS
            step("bench", [py, str(ROOT / "bench/bench_kernel.py"), "--configs", configs,
                           "--no-torch", "--json", str(out / "kernel_gpu.json"),
                           "--plot", str(out / "kernel_gpu.png")], 300)
            report["bench"] = _load(out / "kernel_gpu.json")
        elif name == "attack":
            report["attack"] = {}
            for size, batches in ((224, 3), (720, 1)):
                folder = out / f"attack_imagenet{size}"
                step(f"attack_imagenet{size}",
                     [py, "-m", "spear", "attack", "--dataset", "imagenet", "--data-root",
                      str(Path(a.data_root).resolve()), "--image-size", str(size),
                      "--batch-size", "20", "--width", "200", "--device", "cuda",
                      "--batches", str(batches), "--out", str(folder), "--overwrite"], 240)
                report["attack"][str(size)] = _load(folder / "summary.json")
        elif name == "large":
            for b, m, limit in ((100, 2000, a.large_time_limit), (256, 4000, 2 * a.large_time_limit)):
                step(f"large_b{b}", [py, str(ROOT / "bench/bench_large_batch.py"), "--device", "cuda",
                                     "--bs", str(b), "--ms", str(m), "--kinds", "zero-mean",
                                     "--dtypes", "float32", "--methods", "auto", "--batches", "1",
                                     "--time-limit", str(limit),
                                     "--json", str(out / f"large_b{b}.json")], limit + 120)
                report[f"large_b{b}"] = _load(out / f"large_b{b}.json")
    return _finish(report, save, out, a.bundle)


def _finish(report, save, out: Path, bundle) -> int:
    steps = [s for s in report["steps"].values() if s.get("rc") is not None]
    report["passed"] = all(s["rc"] == 0 for s in steps)
    save()
    if bundle:
        dest = Path(bundle)
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("gpu_check.json", "kernel_gpu.json", "kernel_gpu.png", "scratch_ab.json"):
            if (out / name).exists():
                shutil.copy2(out / name, dest / name)
        # Logs and records only: the attack step's pictures would pass the 16 MiB a file.
        with tarfile.open(dest / "gpu_check_logs.tar.gz", "w:gz") as tar:
            for f in sorted(out.rglob("*")):
                if f.is_file() and f.suffix in (".log", ".json", ".xml", ".csv"):
                    tar.add(f, arcname=str(Path("gpu_check") / f.relative_to(out)))
    print(json.dumps({k: (v.get("rc"), v.get("seconds")) for k, v in report["steps"].items()},
                     indent=1))
    print(f"report: {out / 'gpu_check.json'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
