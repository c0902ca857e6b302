"""spear.reconstruct on the research fixtures (``make_fixtures.py``): verdict, wall and CPU
seconds, inputs within 1e-3 / 1e-2 of the truth (each returned input matched to its
nearest true one), and the diagnosis when not certified.

    OMP_NUM_THREADS=1 python bench/trained/attack_fixtures.py FIXTURES_DIR \\
        mlp1000raw_b20_s0 mlp1000raw_b50_s1 ... [--time-limit 120]
"""
import argparse
import time
from pathlib import Path

import numpy as np

import spear


def nearest_errors(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    d = ((recon[:, None, :] - truth[None]) ** 2).sum(-1)
    j = d.argmin(axis=1)
    return np.sqrt(d[np.arange(len(recon)), j]) / np.linalg.norm(truth[j], axis=1)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("names", nargs="+")
    p.add_argument("--time-limit", type=float, default=120.0)
    args = p.parse_args()
    for name in args.names:
        d = np.load(Path(args.folder) / f"{name}.npz")
        b = len(d["X"])
        c0, t0 = time.process_time(), time.perf_counter()
        r = spear.reconstruct(d["gW"], d["gb"], b, weight=d["W"], bias=d["bias"],
                              time_limit=args.time_limit)
        line = (f"{name} {r.verdict} wall {time.perf_counter() - t0:.1f} s cpu "
                f"{time.process_time() - c0:.1f} s")
        if r.inputs is not None:
            e = nearest_errors(r.inputs, d["X"])
            line += (f" | {len(e)} of {b} inputs returned, within 1e-3: {(e < 1e-3).sum()}, "
                     f"1e-2: {(e < 1e-2).sum()}, worst {e.max():.2g}")
        print(line, flush=True)
        if r.verdict != "certified":
            print("   ", r.diagnosis, flush=True)


if __name__ == "__main__":
    main()
