"""Large batches: the dictionary-learning source of directions, end to end.

For each batch size b, layer width m, input kind (zero-mean Gaussian, or all-positive
"raw pixels" in [0, 1]) and gradient dtype, attack the first layer of a random 3-layer
ReLU network (n = 784) and report: fraction of batches recovered completely *and*
certified, fraction of inputs recovered (matched relative error below 1e-3 for float32
gradients, 1e-6 for float64), and seconds per batch. Writes one JSON record per
configuration and one PNG heat map (b vs m, colour = fraction fully recovered) per
method / input kind / dtype.

The end-to-end attack is :func:`attack`: factorize -> drop zero rows -> rounds of
``dictionary_proposals`` (later rounds steered with ``known`` = the pool's directions)
-> CandidatePool -> greedy_independent -> scales -> Certifier, i.e. what
``spear.reconstruct(method="dictionary")`` does; when that method exists it is used
instead (``--via-reconstruct``).

    python bench/bench_large_batch.py --quick --json /tmp/large.json
    python bench/bench_large_batch.py --bs 100 --ms 2000 --kinds zero-mean --dtypes float32
"""
from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
from common import machine, write_json  # noqa: E402
from gradients import first_layer_gradients, matched_relative_errors  # noqa: E402

import spear  # noqa: E402
from spear.attack.certify import Certifier  # noqa: E402
from spear.attack.decompose import factorize  # noqa: E402
from spear.attack.dictionary import dictionary_proposals  # noqa: E402
from spear.attack.kernel import default_min_zeros, row_thresholds  # noqa: E402
from spear.attack.scale import scales  # noqa: E402
from spear.attack.select import CandidatePool, greedy_independent  # noqa: E402

BS = (20, 32, 50, 64, 100, 128, 200, 256)
MS = (400, 1000, 2000, 4000)
QUICK = [(20, 400), (32, 1000), (50, 2000), (100, 2000)]
RECOVERED = {"float32": 1e-3, "float64": 1e-6}


def attack(grad_weight, grad_bias, b, weight, bias, time_limit=120.0, seed=0, starts_per_b=8,
           refine_per_b=None):
    """Dictionary-learning reconstruction with certificate. Returns (inputs or None,
    certified, stats)."""
    t0 = time.perf_counter()
    dtype = np.float32 if grad_weight.dtype == torch.float32 else np.float64
    gW = grad_weight.double().numpy()
    gb = grad_bias.double().numpy()
    W, Bv = weight.double().numpy(), bias.double().numpy()
    fac = factorize(np, gW, b, dtype)
    s = fac.singular_values
    eps64 = float(np.finfo(np.float64).eps)
    noise_rel = float(max(s[b] if len(s) > b else 0.0, eps64 * s[0]) / s[b - 1])
    tol = float(np.clip(1e3 * noise_rel, 1e-11, 1e-4))
    tol_pool = float(np.clip(1e2 * noise_rel, 1e-13, 1e-5))
    keep = np.abs(gW).sum(axis=1) > 0
    fac.L[~keep] = 0
    L = np.ascontiguousarray(fac.L[keep])
    thresh = row_thresholds(L, tol)
    min_zeros = default_min_zeros(L.shape[0], b, tol)
    pool = CandidatePool(L, thresh, row_thresholds(L, tol_pool))
    certifier = Certifier(np, fac.L, fac.R, W, Bv, noise_rel)
    stats = {"rounds": 0, "proposals": 0, "seconds_proposals": 0.0, "seconds_pool": 0.0}
    best = None
    rnd = 0
    known = None
    while time.perf_counter() - t0 < time_limit:
        left = time_limit - (time.perf_counter() - t0)
        t1 = time.perf_counter()
        q = dictionary_proposals(L, thresh=thresh, min_zeros=min_zeros, seed=seed + rnd,
                                 known=known,
                                 num_starts=(starts_per_b if rnd == 0 else 4) * b,
                                 max_refine=None if refine_per_b is None else refine_per_b * b,
                                 time_limit=left)
        t2 = time.perf_counter()
        pool.add(q)
        stats["seconds_proposals"] += t2 - t1
        stats["seconds_pool"] += time.perf_counter() - t2
        stats["rounds"] += 1
        stats["proposals"] += len(q)
        rnd += 1
        chosen = greedy_independent(pool.q, pool.order(), b)
        stats["directions_found"] = len(chosen)
        # Steer the next round away from what the selection already holds.
        known = pool.q[chosen] if chosen else None
        if len(chosen) < b:
            continue
        Qunit = pool.q[chosen].T
        Q = Qunit * scales(np, fac.L, Qunit, gb)[None, :]
        X = np.linalg.solve(Q, fac.R)
        cert = certifier(Q)
        best = X
        if cert.certified:
            stats["seconds"] = time.perf_counter() - t0
            return X, True, stats
        # b independent directions but a mixture among them: steer away from the columns
        # the certificate accepts, so the one it replaces can be found.
        ok = [c for c, v in zip(chosen, cert.per_column) if v == 0]
        known = pool.q[ok] if ok else None
    stats["seconds"] = time.perf_counter() - t0
    return best, False, stats


def _via_reconstruct_available() -> bool:
    return "method" in inspect.signature(spear.reconstruct).parameters


def run_config(b, m, kind, dtype, batches, time_limit, method, via_reconstruct, seed0=0, **kw):
    rows = []
    for i in range(batches):
        seed = seed0 + 1000 * i + b
        g = first_layer_gradients(b, width=m, n=784, positive=(kind == "positive"),
                                  dtype=getattr(torch, dtype), seed=seed)
        t0 = time.perf_counter()
        if method == "sample" or via_reconstruct:
            kw = {} if method == "sample" else {"method": method}
            rec = spear.reconstruct(g.grad_weight, g.grad_bias, b, weight=g.weight, bias=g.bias,
                                    time_limit=time_limit, device="cpu", **kw)
            X, certified, st = rec.inputs, bool(rec.certified), {}
            if X is None and rec.directions.size:
                X = None
        else:
            X, certified, st = attack(g.grad_weight, g.grad_bias, b, g.weight, g.bias,
                                      time_limit=time_limit, seed=seed, **kw)
        secs = time.perf_counter() - t0
        if X is not None:
            err = matched_relative_errors(X, g.inputs)
            frac = float((err < RECOVERED[dtype]).mean())
        else:
            frac = 0.0
        rows.append({"recovered_fraction": frac, "certified": certified,
                     "complete": bool(certified and frac == 1.0), "seconds": secs,
                     "directions_found": st.get("directions_found"), "rounds": st.get("rounds"),
                     "seconds_proposals": st.get("seconds_proposals"),
                     "seconds_pool": st.get("seconds_pool")})
        print(f"  {method:>10} {kind:>9} {dtype} b={b:<3} m={m:<4} batch {i}: recovered {frac:.2f} "
              f"certified {certified} {secs:.1f}s rounds {st.get('rounds')} "
              f"(proposals {st.get('seconds_proposals', 0):.1f}s, pool {st.get('seconds_pool', 0):.1f}s)",
              flush=True)
    return {"method": method, "kind": kind, "dtype": dtype, "b": b, "m": m, "batches": batches,
            "time_limit": time_limit,
            "complete_fraction": sum(r["complete"] for r in rows) / len(rows),
            "certified_fraction": sum(r["certified"] for r in rows) / len(rows),
            "recovered_fraction": float(np.mean([r["recovered_fraction"] for r in rows])),
            "seconds_median": float(np.median([r["seconds"] for r in rows])),
            "per_batch": rows}


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
        for r in rs:
            grid[bs.index(r["b"]), ms.index(r["m"])] = r["complete_fraction"]
            secs[bs.index(r["b"]), ms.index(r["m"])] = r["seconds_median"]
        fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(ms) + 2), 0.6 * len(bs) + 2))
        im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="lower", aspect="auto")
        ax.set_xticks(range(len(ms)), [str(m) for m in ms])
        ax.set_yticks(range(len(bs)), [str(b) for b in bs])
        ax.set_xlabel("layer width m")
        ax.set_ylabel("batch size b")
        for i in range(len(bs)):
            for j in range(len(ms)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}\n{secs[i, j]:.0f}s", ha="center",
                            va="center", color="w" if grid[i, j] < 0.6 else "k", fontsize=7)
        ax.set_title(f"{method}, {kind} inputs, {dtype} gradients\nfraction of batches fully recovered + certified",
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
    p.add_argument("--methods", default="dictionary", help="dictionary and/or sample")
    p.add_argument("--batches", type=int, default=None, help="batches per configuration")
    p.add_argument("--time-limit", type=float, default=120.0, help="seconds per batch")
    p.add_argument("--starts-per-b", type=int, default=8, help="ADM starts per input, first round")
    p.add_argument("--refine-per-b", type=int, default=None,
                   help="refine at most this many ADM results per input (default: all)")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG path prefix (default: next to --json)")
    p.add_argument("--via-reconstruct", action="store_true",
                   help="use spear.reconstruct(method=...) when it accepts a method")
    a = p.parse_args()
    if a.quick:
        configs = QUICK
        dtypes = ["float32"]
        batches = a.batches or 1
    else:
        configs = [(b, m) for b in map(int, a.bs.split(",")) for m in map(int, a.ms.split(","))
                   if b < m]
        dtypes = a.dtypes.split(",")
        batches = a.batches or 3
    via = a.via_reconstruct and _via_reconstruct_available()
    records = []
    for method in a.methods.split(","):
        for kind in a.kinds.split(","):
            for dtype in dtypes:
                for b, m in configs:
                    r = run_config(b, m, kind, dtype, batches, a.time_limit, method, via,
                                   starts_per_b=a.starts_per_b, refine_per_b=a.refine_per_b)
                    records.append(r)
                    print(f"{method} {kind} {dtype} b={b} m={m}: complete {r['complete_fraction']:.2f} "
                          f"inputs {r['recovered_fraction']:.2f} median {r['seconds_median']:.1f}s",
                          flush=True)
                    if a.json:
                        write_json(records, a.json, machine())
    prefix = a.plot or (str(Path(a.json).with_suffix("")) if a.json else None)
    if prefix:
        for path in heat_maps(records, prefix):
            print("wrote", path)


if __name__ == "__main__":
    main()
