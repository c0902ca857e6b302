"""Steered rounds with and without the known columns projected out of their starts (the
measurement behind STEERED_PROJECTION in spear/attack/screened.py).

One synthetic batch (the compare_sources.py case): a first screened round, then steered
rounds from the true columns it found, counting the missing columns each round adds;
the same rounds again with ``project_starts`` off.

    OMP_NUM_THREADS=1 python bench/large/steered_projection.py --b 256 --m 4000 --rounds 4
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spear.attack import prepare
from spear.attack.budget import Budget
from spear.attack.screened import Screened
from spear.synthetic import first_layer_gradients

EXACT_COS = 1 - 1e-4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--b", type=int, default=256)
    ap.add_argument("--m", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    g = first_layer_gradients(a.b, width=a.m, n=784, dtype=torch.float32, seed=a.seed)
    p = prepare(g.grad_weight, g.grad_bias, a.b, weight=g.weight, bias=g.bias, device="cpu")
    dZ = g.grad_weight.double().numpy() @ np.linalg.pinv(g.inputs)
    Q = np.linalg.lstsq(p.L_live, dZ[p.live], rcond=None)[0]
    Qtrue = (Q / np.linalg.norm(Q, axis=0)).T                      # rows, L coordinates

    def hits(q):
        return (np.abs(q @ Qtrue.T) > EXACT_COS).any(axis=0) if len(q) else np.zeros(a.b, bool)

    t0 = time.perf_counter()
    first = hits(Screened().propose(p, np.empty((0, a.b)), Budget(), a.seed).q)
    print(f"b = {a.b}, m = {a.m}, seed {a.seed}: first round {first.sum()} of {a.b} "
          f"in {time.perf_counter() - t0:.1f} s", flush=True)
    for project in (True, False):
        found, src = first.copy(), Screened()
        options = src.round_options
        src.round_options = lambda b, k: {**options(b, k), "project_starts": project}
        for r in range(1, a.rounds + 1):
            src.rounds = r
            t0 = time.perf_counter()
            new = hits(src.propose(p, Qtrue[found], Budget(), a.seed + r).q) & ~found
            found |= new
            print(f"  projected starts {'on ' if project else 'off'} round {r}: +{new.sum()} -> "
                  f"{found.sum()} of {a.b} ({time.perf_counter() - t0:.1f} s)", flush=True)
            if found.all():
                break


if __name__ == "__main__":
    main()
