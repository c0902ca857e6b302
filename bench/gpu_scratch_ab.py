"""The CUDA sampler's two pass-1 kernels side by side in one run: scratch in shared
memory (the default where it fits) and in local memory (SPEAR_CUDA_SCRATCH=local).
Same seed, so the accepted samples must be identical; prints samples/s and the ratio.

    python bench/gpu_scratch_ab.py --json out.json
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_time, planted_L, write_json  # noqa: E402

import spear  # noqa: E402

CONFIGS = "8:200:float32,12:200:float32,12:200:float64,16:200:float32,20:200:float32,20:400:float32,20:2000:float32"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--configs", default=CONFIGS)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if not spear.cuda_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    import cupy as cp
    from spear import _core

    sync = cp.cuda.get_current_stream().synchronize
    records, bad = [], 0
    for c in a.configs.split(","):
        b, m, dtype = int(c.split(":")[0]), int(c.split(":")[1]), c.split(":")[2]
        Ld = cp.asarray(planted_L(m, b, seed=b, dtype=np.dtype(dtype)))
        runs = {}
        for mode in ("local", "default"):
            if mode == "local":
                os.environ["SPEAR_CUDA_SCRATCH"] = "local"
            else:
                os.environ.pop("SPEAR_CUDA_SCRATCH", None)
            info = _core.cuda_kernel_info(dtype, b, Ld.shape[0])
            t, _ = median_time(lambda: spear.sample_directions(Ld, 1_000_000), 1, sync=sync)
            n = int(max(1e6, min(2e9, 1e6 * 1.0 / max(t, 1e-6))))
            t, times = median_time(lambda: spear.sample_directions(Ld, n), a.repeats, sync=sync)
            d = spear.sample_directions(Ld, 2_000_000, seed=3)
            runs[mode] = (n / t, d, info)
            records.append({"backend": "cuda", "scratch": "shared" if info["shared_bytes"] else "local",
                            "b": b, "m": m, "dtype": dtype, "samples": n, "seconds": t,
                            "samples_per_s": n / t, "kernel": info})
        (rl, dl, _), (rd, dd, info) = runs["local"], runs["default"]
        same = (dl.accepted_total == dd.accepted_total and np.array_equal(cp.asnumpy(dl.index), cp.asnumpy(dd.index))
                and np.array_equal(cp.asnumpy(dl.q), cp.asnumpy(dd.q)))
        bad += not same
        records[-1]["ratio_vs_local"] = rd / rl
        records[-1]["identical_to_local"] = bool(same)
        print(f"b={b:<3} m={m:<5} {dtype:<8} local {rl:10.4g}/s  default ({'shared' if info['shared_bytes'] else 'local'}, "
              f"{info['blocks_per_sm']} blocks/SM) {rd:10.4g}/s  x{rd / rl:.2f}  "
              f"{'identical' if same else 'DIFFERENT'} ({dd.accepted_total} accepted)", flush=True)
    os.environ.pop("SPEAR_CUDA_SCRATCH", None)
    if a.json:
        write_json(records, a.json, machine())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
