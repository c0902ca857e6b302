"""Large batches: how far each source of directions reaches, end to end.

For each batch size b, layer width m, input kind (zero-mean Gaussian, or all-positive
"raw pixels" in [0, 1]) and gradient dtype, attack the first layer of a random 3-layer
ReLU network (n = 784) with ``spear.reconstruct(method=...)`` and report: fraction of
batches recovered completely *and* certified, fraction of inputs recovered (matched
relative error below 1e-3 for float32 gradients, 1e-6 for float64), and seconds per
batch. Writes one JSON record per configuration and one PNG heat map (b vs m, colour =
fraction fully recovered) per method / input kind / dtype; "sample" on the same axes is
the sampler's limit.

A method that recovers no batch at some b is not run at larger b for the same m, kind
and dtype (each such cell would only burn its time limit): those cells are recorded
with ``"skipped": true`` and drawn hatched. ``--no-skip`` runs them anyway.

    python bench/bench_large_batch.py --quick --json /tmp/large.json
    python bench/bench_large_batch.py --bs 100 --ms 2000 --kinds zero-mean --dtypes float32
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

import spear  # noqa: E402
from spear.experiment import median  # noqa: E402
from spear.metrics import feature_metrics  # noqa: E402
from spear.settings import SEARCHES as METHODS  # noqa: E402
from spear.synthetic import first_layer_gradients  # noqa: E402

BS = (20, 32, 50, 64, 100, 128, 200, 256, 512)
MS = (400, 1000, 2000, 4000, 8000)
QUICK = [(20, 400), (32, 1000), (50, 2000), (100, 2000)]
RECOVERED = {"float32": 1e-3, "float64": 1e-6}


def run_config(b, m, kind, dtype, batches, time_limit, method, seed0=0, device="cpu"):
    rows = []
    for i in range(batches):
        seed = seed0 + 1000 * i + b
        g = first_layer_gradients(b, width=m, n=784, positive=(kind == "positive"),
                                  dtype=getattr(torch, dtype), seed=seed)
        t0 = time.perf_counter()
        rec = spear.reconstruct(g.grad_weight, g.grad_bias, b, weight=g.weight, bias=g.bias,
                                time_limit=time_limit, device=device, method=method, seed=seed)
        secs = time.perf_counter() - t0
        frac = 0.0
        if rec.inputs is not None:
            frac = float((feature_metrics(rec.inputs, g.inputs)["rel_err"] < RECOVERED[dtype]).mean())
        st = rec.stats
        rows.append({"recovered_fraction": frac, "certified": bool(rec.certified),
                     "complete": bool(rec.certified and frac == 1.0), "seconds": secs,
                     "directions_found": st.get("directions_found"),
                     "rounds": st.get("dictionary_rounds"), "samples": st.get("samples"),
                     "backend": st.get("backend")})
        print(f"  {method:>10} {kind:>9} {dtype} b={b:<3} m={m:<4} batch {i}: recovered {frac:.2f} "
              f"certified {bool(rec.certified)} {secs:.1f}s directions {st.get('directions_found')}/{b}",
              flush=True)
    return {"method": method, "kind": kind, "dtype": dtype, "b": b, "m": m, "batches": batches,
            "time_limit": time_limit, "skipped": False, "device": device,
            "complete_fraction": sum(r["complete"] for r in rows) / len(rows),
            "certified_fraction": sum(r["certified"] for r in rows) / len(rows),
            "recovered_fraction": float(np.mean([r["recovered_fraction"] for r in rows])),
            "seconds_median": median(rows, "seconds"),
            "per_batch": rows}


def skipped_config(b, m, kind, dtype, method, time_limit):
    return {"method": method, "kind": kind, "dtype": dtype, "b": b, "m": m, "batches": 0,
            "time_limit": time_limit, "skipped": True, "complete_fraction": 0.0,
            "certified_fraction": 0.0, "recovered_fraction": None, "seconds_median": None,
            "per_batch": []}


def heat_maps(records, path_prefix: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    groups = sorted({(r["method"], r["kind"], r["dtype"]) for r in records})
    for method, kind, dtype in groups:
        rs = [r for r in records if (r["method"], r["kind"], r["dtype"]) == (method, kind, dtype)]
        bs = sorted({r["b"] for r in rs})
        ms = sorted({r["m"] for r in rs})
        grid = np.full((len(bs), len(ms)), np.nan)
        secs = np.full_like(grid, np.nan)
        skipped = np.zeros(grid.shape, dtype=bool)
        for r in rs:
            i, j = bs.index(r["b"]), ms.index(r["m"])
            skipped[i, j] = r.get("skipped", False)
            if not skipped[i, j]:
                grid[i, j] = r["complete_fraction"]
                secs[i, j] = r["seconds_median"]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(ms) + 2), 0.6 * len(bs) + 2))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        ax.set_xticks(range(len(ms)), [str(m) for m in ms])
        ax.set_yticks(range(len(bs)), [str(b) for b in bs])
        ax.set_xlabel("layer width m")
        ax.set_ylabel("batch size b")
        for i in range(len(bs)):
            for j in range(len(ms)):
                if skipped[i, j]:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//",
                                               edgecolor="grey", lw=0))
                    ax.text(j, i, "skipped", ha="center", va="center", color="grey", fontsize=7)
                elif not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}\n{secs[i, j]:.0f}s", ha="center",
                            va="center", color="w" if grid[i, j] < 0.6 else "k", fontsize=7)
        ax.set_title(f"{method}, {kind} inputs, {dtype} gradients\nfraction of batches fully "
                     f"recovered + certified\n(hatched: skipped after a failure at smaller b)",
                     fontsize=9)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        out = f"{path_prefix}_{method}_{kind}_{dtype}.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        written.append(out)
    return written


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small subset: " + str(QUICK))
    p.add_argument("--bs", default=",".join(map(str, BS)))
    p.add_argument("--ms", default=",".join(map(str, MS)))
    p.add_argument("--kinds", default="zero-mean,positive")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--methods", default="auto,sample", help=f"any of {', '.join(METHODS)}")
    p.add_argument("--batches", type=int, default=None, help="batches per configuration")
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per batch")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the attack runs (cuda: kernel and dictionary rounds on the GPU)")
    p.add_argument("--no-skip", action="store_true", help="run larger b after a failure too")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG path prefix (default: next to --json)")
    a = p.parse_args()
    if a.quick:
        configs, dtypes, batches = QUICK, ["float32"], a.batches or 1
    else:
        configs = [(b, m) for b in map(int, a.bs.split(",")) for m in map(int, a.ms.split(","))
                   if b < m]
        dtypes, batches = a.dtypes.split(","), a.batches or 3
    methods = a.methods.split(",")
    for method in methods:
        if method not in METHODS:
            p.error(f"unknown method {method!r}")
    records = []
    for method in methods:
        for kind in a.kinds.split(","):
            for dtype in dtypes:
                failed_at: dict[int, int] = {}          # m -> smallest b with nothing recovered
                for b, m in sorted(configs):
                    if not a.no_skip and m in failed_at and b > failed_at[m]:
                        records.append(skipped_config(b, m, kind, dtype, method, a.time_limit))
                        continue
                    r = run_config(b, m, kind, dtype, batches, a.time_limit, method, device=a.device)
                    records.append(r)
                    if r["complete_fraction"] == 0:
                        failed_at.setdefault(m, b)
                    print(f"{method} {kind} {dtype} b={b} m={m}: complete {r['complete_fraction']:.2f} "
                          f"inputs {r['recovered_fraction']:.2f} median {r['seconds_median']:.1f}s",
                          flush=True)
                    if a.json:
                        write_json(records, a.json, machine())
    if a.json:
        write_json(records, a.json, machine())
    prefix = a.plot or (str(Path(a.json).with_suffix("")) if a.json else None)
    if prefix:
        for path in heat_maps(records, prefix):
            print("wrote", path)


if __name__ == "__main__":
    main()
