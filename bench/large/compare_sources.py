"""Side by side: end-to-end ``spear.reconstruct`` with different direction sources on the
same synthetic batches (issue 18). One line per (method, b, m, seed): seconds, certified,
fraction of inputs recovered, directions found, turns per source.

    OMP_NUM_THREADS=2 python bench/large/compare_sources.py --cases 128:2000 --methods dictionary screened
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import spear
from spear.attack import sources as S
from spear.metrics import feature_metrics
from spear.synthetic import first_layer_gradients


class Traced:
    """Wraps a source: prints each turn's seconds, proposals and new directions."""

    def __init__(self, source):
        self.source, self.name = source, source.name
        self.t0 = self.n = None

    @property
    def exhausted(self):
        return self.source.exhausted

    def propose(self, problem, known, budget, seed):
        self.t0 = time.perf_counter()
        p = self.source.propose(problem, known, budget, seed)
        self.n = len(p.q)
        self.t1 = time.perf_counter()
        return p

    def observe(self, added):
        print(f"    {self.name}: {self.t1 - self.t0:.1f}s proposals {self.n}, +{added} "
              f"(pool+select {time.perf_counter() - self.t1:.1f}s)", flush=True)
        self.source.observe(added)


def make(method: str, trace: bool = False):
    """A method name; "screened" (the source alone, patience 3 like "dictionary"),
    "screened-neighbours" (then the neighbour search), or "auto-dictionary" ("auto" as it
    was for every b before issue 18)."""
    if method in ("screened", "screened-neighbours"):
        from spear.attack import Neighbours, Screened
        sources = [Screened(patience=S.DICTIONARY_PATIENCE)]
        if method == "screened-neighbours":
            sources.append(Neighbours())
    elif method == "auto-dictionary":
        # "auto" as it was before the screened source: dictionary rounds, then the sampler
        sources = [S.Dictionary(patience=1, time_share=S.AUTO_DICTIONARY_SHARE), S.Sampler()]
    elif method == "dictionary" and trace:
        sources = [S.Dictionary(patience=S.DICTIONARY_PATIENCE)]
    else:
        return method
    return [Traced(s) if trace and s.name != "sample" else s for s in sources]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="+", default=["128:2000"])
    ap.add_argument("--methods", nargs="+", default=["dictionary"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--time-limit", type=float, default=300)
    ap.add_argument("--positive", action="store_true")
    ap.add_argument("--json")
    ap.add_argument("--trace", action="store_true", help="print each turn of a source")
    args = ap.parse_args()
    rows = []
    for c in args.cases:
        b, m = (int(x) for x in c.split(":"))
        for seed in args.seeds:
            g = first_layer_gradients(b, width=m, n=784, positive=args.positive, dtype=torch.float32,
                                      seed=seed)
            for method in args.methods:
                t0 = time.perf_counter()
                rec = spear.reconstruct(g.grad_weight, g.grad_bias, b, weight=g.weight, bias=g.bias,
                                        time_limit=args.time_limit, device="cpu", method=make(method, args.trace),
                                        seed=seed)
                secs = time.perf_counter() - t0
                frac = 0.0
                if rec.inputs is not None:
                    frac = float((feature_metrics(rec.inputs, g.inputs)["rel_err"] < 1e-3).mean())
                row = {"method": method, "b": b, "m": m, "seed": seed, "seconds": round(secs, 1),
                       "certified": bool(rec.certified), "recovered": frac,
                       "found": rec.stats.get("directions_found"), "rounds": rec.stats.get("rounds"),
                       "source_seconds": {k: round(v, 1) for k, v in
                                          rec.stats.get("source_seconds", {}).items()}}
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
