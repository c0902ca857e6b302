"""Throughput of the direction sampler: submatrices evaluated per second against b.

Backends (JSON field ``backend``):
  cpu                 the C++ kernel (all cores; ``threads`` says how many; also 1 core)
  numpy-batched       the paper's way: batches of 10^4 submatrices through a batched SVD,
                      then L q and a count (numpy)
  torch-batched       the same with torch on the CPU
  cuda                the CUDA kernel (when a GPU is present)
  torch-cuda-batched  the batched baseline with torch on the GPU
``ratio_vs_baseline`` on kernel records: kernel rate over the batched baseline of the same
device (numpy-batched for cpu, torch-cuda-batched for cuda), measured in the same run.

    python bench/bench_kernel.py --quick --json out.json [--plot out.png] [--markdown out.md]

Kernel and numpy records also carry ``cpu_per_wall``: the process's CPU time over wall time
during the timed runs (about 2 when the kernel's two threads really had two cores, about 1
for the single-threaded baseline on an idle machine; less where other load took the cores),
and the run's metadata the load average before and after.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_time, planted_L, write_json  # noqa: E402

import spear  # noqa: E402
from spear.attack.kernel import DEFAULT_TOL  # noqa: E402

BATCH = 10_000  # the paper's batch of submatrices per SVD call


def draw_rows(rng, m, b, count):
    # b-1 distinct rows per sample (argsort of random keys: vectorized, like the paper's code)
    return np.argsort(rng.random((count, m)), axis=1)[:, : b - 1]


def numpy_batched(L, samples, tol):
    rng = np.random.default_rng(0)
    m, b = L.shape
    norms = np.linalg.norm(L, axis=1)
    kept = 0
    for start in range(0, samples, BATCH):
        k = min(BATCH, samples - start)
        rows = draw_rows(rng, m, b, k)
        _, _, vt = np.linalg.svd(L[rows], full_matrices=True)     # (k, b, b)
        q = vt[:, -1, :]                                          # null vectors
        zeros = (np.abs(q @ L.T) <= tol * norms).sum(axis=1)
        kept += int((zeros >= 2 * b).sum())
    return kept


def torch_batched(L, samples, tol, device="cpu"):
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    Lt = torch.as_tensor(L, device=device)
    m, b = L.shape
    norms = torch.linalg.norm(Lt, dim=1)
    kept = 0
    for start in range(0, samples, BATCH):
        k = min(BATCH, samples - start)
        rows = torch.argsort(torch.rand((k, m), generator=g, device=device), dim=1)[:, : b - 1]
        _, _, vh = torch.linalg.svd(Lt[rows], full_matrices=True)
        q = vh[:, -1, :]
        zeros = ((q @ Lt.T).abs() <= tol * norms).sum(dim=1)
        kept += int((zeros >= 2 * b).sum())
    return kept


def run(configs, repeats, with_torch, target_seconds):
    records = []
    gpu = spear.cuda_available()
    torch_cuda = False
    if gpu:
        try:
            import torch

            torch_cuda = torch.cuda.is_available()   # a CPU-only torch has no CUDA generator
        except ImportError:
            pass
        if not torch_cuda:
            print("note: torch has no CUDA here: the CUDA kernel is timed without the "
                  "torch-cuda-batched baseline (no ratio)", flush=True)
    for b, m, dtype in configs:
        L = planted_L(m, b, seed=b, dtype=np.dtype(dtype))
        tol = DEFAULT_TOL[np.dtype(dtype)]
        base = {"b": b, "m": m, "dtype": dtype}

        def rec(backend, samples, seconds, **extra):
            r = {"backend": backend, **base, "samples": samples, "seconds": seconds,
                 "samples_per_s": samples / seconds, **extra}
            records.append(r)
            label = backend + (f" ({extra['threads']} thr)" if "threads" in extra else "")
            print(f"{label:>24} b={b:<3} m={m:<5} {dtype:<8} {r['samples_per_s']:12.4g} /s"
                  + (f"   x{extra['ratio_vs_baseline']:.1f} vs baseline" if "ratio_vs_baseline" in extra else "")
                  + (f"   cpu/wall {extra['cpu_per_wall']:.2f}" if "cpu_per_wall" in extra else ""),
                  flush=True)
            return r

        nb = 2 * BATCH
        numpy_batched(L, BATCH, tol)  # warm-up
        cpu0 = time.process_time()
        t, times = median_time(lambda: numpy_batched(L, nb, tol), repeats, warmup=0)
        baseline = rec("numpy-batched", nb, t, cpu_per_wall=(time.process_time() - cpu0) / sum(times))
        if with_torch:
            t, _ = median_time(lambda: torch_batched(L, nb, tol), repeats)
            rec("torch-batched", nb, t)
        for threads in (0, 1):
            # size the run to about target_seconds
            probe = 20_000
            t, _ = median_time(lambda: spear.sample_directions(L, probe, num_threads=threads), 1)
            n = int(max(probe, min(5e8, probe * target_seconds / max(t, 1e-6))))
            cpu0 = time.process_time()
            # no warm-up: the sizing run above was one
            t, times = median_time(lambda: spear.sample_directions(L, n, num_threads=threads),
                                   repeats, warmup=0)
            cpu = time.process_time() - cpu0
            nthreads = threads or spear._core.cpu_max_threads()
            rec("cpu", n, t, threads=nthreads, simd=spear._core.cpu_simd(),
                cpu_per_wall=cpu / sum(times),
                ratio_vs_baseline=(n / t) / baseline["samples_per_s"])
        if gpu:
            import cupy as cp

            Ld = cp.asarray(L)
            sync = cp.cuda.get_current_stream().synchronize
            extra = {}
            if torch_cuda:
                import torch

                tb, _ = median_time(lambda: torch_batched(L, 10 * BATCH, tol, device="cuda"),
                                    repeats, sync=torch.cuda.synchronize)
                gbase = rec("torch-cuda-batched", 10 * BATCH, tb)
            probe = 1_000_000
            t, _ = median_time(lambda: spear.sample_directions(Ld, probe), 1, sync=sync)
            n = int(max(probe, min(2e9, probe * 4 * target_seconds / max(t, 1e-6))))
            t, _ = median_time(lambda: spear.sample_directions(Ld, n), repeats, sync=sync)
            if torch_cuda:
                extra["ratio_vs_baseline"] = (n / t) / gbase["samples_per_s"]
            rec("cuda", n, t, kernel=spear._core.cuda_kernel_info(dtype, b, L.shape[0]), **extra)
    return records


def _series_key(r):
    return (r["backend"], r.get("threads"), r["m"])


def _series_label(key):
    backend, threads, m = key
    return f"{backend}{'' if threads is None else f' ({threads} thr)'} m={m}"


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # One colour (backend, threads) and one line style (m) per series, the same on every
    # panel, and one legend for the figure.
    keys = sorted({_series_key(r) for r in records}, key=str)
    kinds = sorted({k[:2] for k in keys}, key=str)
    colours = {kd: plt.get_cmap("tab10")(i % 10) for i, kd in enumerate(kinds)}
    styles = {m: st for m, st in zip(sorted({k[2] for k in keys}), ("-", "--", ":", "-."))}
    dtypes = [d for d in ("float32", "float64") if any(r["dtype"] == d for r in records)]
    fig, axes = plt.subplots(1, len(dtypes), figsize=(5.5 * len(dtypes) + 2.5, 4), sharey=True,
                             squeeze=False)
    handles = {}
    for ax, dtype in zip(axes[0], dtypes):
        for key in keys:
            pts = sorted((r["b"], r["samples_per_s"]) for r in records
                         if r["dtype"] == dtype and _series_key(r) == key)
            if not pts:
                continue
            (line,) = ax.plot(*zip(*pts), marker="o", color=colours[key[:2]],
                              linestyle=styles.get(key[2], "-"), label=_series_label(key))
            handles.setdefault(key, line)
        ax.set_yscale("log")
        ax.set_xlabel("batch size b")
        ax.set_title(dtype)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("submatrices per second")
    fig.legend([handles[k] for k in keys if k in handles],
               [_series_label(k) for k in keys if k in handles],
               loc="center right", fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 2.0 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)


def markdown(records) -> str:
    """The results table of bench/results/README.md: one row per (dtype, m, b)."""
    cols = {}
    for r in records:
        row = cols.setdefault((r["dtype"], r["m"], r["b"]), {})
        if r["backend"] == "cpu":
            row["cpu2" if r["threads"] > 1 else "cpu1"] = r
        else:
            row[r["backend"]] = r
    fmt = lambda row, key: f"{row[key]['samples_per_s']:.3g}" if key in row else "-"  # noqa: E731
    lines = ["| dtype | m | b | numpy batched | torch batched | kernel, 1 thread | kernel, 2 threads "
             "| kernel (2 thr) / numpy | CPU / wall (2 thr) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for (dtype, m, b), row in sorted(cols.items()):
        two = row.get("cpu2", {})
        ratio = f"{two['ratio_vs_baseline']:.1f}x" if "ratio_vs_baseline" in two else "-"
        load = f"{two['cpu_per_wall']:.2f}" if "cpu_per_wall" in two else "-"
        lines.append(f"| {dtype} | {m} | {b} | {fmt(row, 'numpy-batched')} | {fmt(row, 'torch-batched')} "
                     f"| {fmt(row, 'cpu1')} | {fmt(row, 'cpu2')} | {ratio} | {load} |")
    return "\n".join(lines) + "\n"


def _prepare_output(path: str | None, what: str) -> None:
    """Create the folder of an output file now, and fail before the work if it cannot be
    written (not after minutes of measuring)."""
    if path is None:
        return
    folder = Path(path).resolve().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: cannot create the folder of --{what} {path}: {e}") from None
    if not os.access(folder, os.W_OK):
        raise SystemExit(f"error: the folder of --{what} {path} is not writable")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a subset (under two minutes on two cores)")
    p.add_argument("--json", default=None, help="write the records here")
    p.add_argument("--plot", default=None, help="write a PNG plot here")
    p.add_argument("--markdown", default=None, help="write the results table (markdown) here")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--no-torch", action="store_true", help="skip the torch CPU baseline")
    p.add_argument("--configs", default=None,
                   help="explicit list b:m:dtype,... (e.g. 20:200:float64,8:2000:float32)")
    a = p.parse_args()
    if a.configs:
        configs = [(int(b), int(m), dt) for b, m, dt in (c.split(":") for c in a.configs.split(","))]
        repeats, target = a.repeats or 3, 0.3
    elif a.quick:
        configs = [(b, 200, "float64") for b in (8, 20, 32)] + [(20, 200, "float32"), (20, 2000, "float64")]
        repeats, target = a.repeats or 3, 0.3
    else:
        configs = [(b, m, dt) for dt in ("float32", "float64") for m in (200, 2000)
                   for b in (4, 8, 12, 16, 20, 24, 32)]
        repeats, target = a.repeats or 5, 1.0
    _prepare_output(a.json, "json")
    _prepare_output(a.plot, "plot")
    _prepare_output(a.markdown, "markdown")
    load_before = os.getloadavg()
    records = run(configs, repeats, not a.no_torch, target)
    meta = machine()
    meta["load_average_before"] = list(load_before)
    meta["load_average_after"] = list(os.getloadavg())
    meta["cpu_simd"] = spear._core.cpu_simd()
    meta["threads"] = spear._core.cpu_max_threads()
    if a.json:
        write_json(records, a.json, meta)
    if a.plot:
        plot(records, a.plot)
    if a.markdown:
        Path(a.markdown).write_text(markdown(records))


if __name__ == "__main__":
    main()
