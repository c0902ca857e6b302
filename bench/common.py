"""Shared helpers for the benchmarks: machine description, medians, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"), "command": " ".join([Path(sys.executable).name, *sys.argv])}
    try:
        import spear

        info["spear"] = spear.__version__
        if spear.cuda_available():
            from spear import _core

            info["gpu"] = _core.cuda_device_name(0)
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True).stdout.strip()
    except Exception:
        pass
    return info


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1,
                sync: Callable[[], None] | None = None) -> tuple[float, list[float]]:
    """Median wall time of fn() over repeats, after warm-up runs."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def planted_L(m: int, b: int, rho: float = 0.5, seed: int = 0, dtype=np.float64) -> np.ndarray:
    """L = dZ Q^-1 with a sparse dZ: what a real gradient's factor looks like to the sampler."""
    rng = np.random.default_rng(seed)
    dZ = rng.standard_normal((m, b)) * (rng.random((m, b)) > rho)
    dZ = dZ[dZ.any(axis=1)]
    return np.ascontiguousarray((dZ @ np.linalg.inv(rng.standard_normal((b, b)))).astype(dtype))


def write_json(records, path: str | Path, meta: dict) -> None:
    """A JSON list, one record per configuration; each carries the machine it ran on."""
    Path(path).write_text(json.dumps([{**r, "machine": meta} for r in records], indent=1) + "\n")


#: Sub-folder of the datasets folder (../shared/datasets or $SPEAR_DATASETS) per dataset.
DATASET_FOLDERS = {"mnist": "mnist", "tiny-imagenet": "tiny-imagenet-200",
                   "imagenet": "imagenet-sample", "adult": "adult", "digits": None}


def dataset_root(data: str, dataset: str) -> tuple[bool, str | None]:
    """(available, root) of ``dataset`` under the datasets folder ``data``; embedded
    datasets (digits) have no root and are always available."""
    folder = DATASET_FOLDERS[dataset]
    if folder is None:
        return True, None
    root = str(Path(data) / folder)
    if not Path(root).is_dir():
        print(f"skipping {dataset}: {root} not found")
        return False, root
    return True, root
