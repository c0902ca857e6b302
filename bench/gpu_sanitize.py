"""A short CUDA sampler run for compute-sanitizer (bench/gpu_check.py runs it under
memcheck, racecheck and initcheck): several chunks (SPEAR_CUDA_CHUNK_TILES), truncation,
both dtypes, and a check against the CPU kernel.

    compute-sanitizer --tool memcheck python bench/gpu_sanitize.py --b 20
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import planted_L  # noqa: E402

import spear  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--b", type=int, required=True)
    p.add_argument("--m", type=int, default=None)
    p.add_argument("--samples", type=int, default=4096)
    a = p.parse_args()
    import cupy as cp

    os.environ.setdefault("SPEAR_CUDA_CHUNK_TILES", "4")   # 512 samples per chunk
    m = a.m or max(4 * a.b, 40)
    bad = 0
    for dtype in ("float64", "float32"):
        # rho high enough that some samples are accepted at every b
        L = planted_L(m, a.b, rho=min(0.9, 0.5 + 0.006 * a.b), seed=a.b, dtype=np.dtype(dtype))
        for cap in (100_000, 7):
            gpu = spear.sample_directions(cp.asarray(L), a.samples, seed=1, max_candidates=cap)
            cpu = spear.sample_directions(L, a.samples, seed=1, max_candidates=cap, device="cpu")
            same = (gpu.accepted_total == cpu.accepted_total
                    and np.array_equal(cp.asnumpy(gpu.index), cpu.index)
                    and np.array_equal(cp.asnumpy(gpu.q), cpu.q))
            print(f"b={a.b} m={m} {dtype} cap={cap}: accepted {gpu.accepted_total}, "
                  f"{'same as CPU' if same else 'DIFFERENT from CPU'}", flush=True)
            bad += not same
    cp.cuda.Device().synchronize()
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
