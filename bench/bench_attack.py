"""End-to-end attack: time per batch and reconstruction quality on the paper's settings.

6-layer FCNN, first layer, width 200 (and 2000), on MNIST, TinyImageNet, ImageNet 224 and
ADULT from a datasets folder (default ../shared/datasets or $SPEAR_DATASETS). Medians over
batches; one JSON record per (dataset, width, batch size).

    python bench/bench_attack.py --quick --json out.json
    python bench/bench_attack.py --datasets mnist,adult --batch-sizes 16,20 --batches 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, write_json  # noqa: E402

from spear.experiment import AttackConfig, Experiment, batch_row  # noqa: E402

FOLDERS = {"mnist": "mnist", "tiny-imagenet": "tiny-imagenet-200", "imagenet": "imagenet-sample",
           "adult": "adult", "digits": None}


def run_one(dataset, root, b, width, batches, time_limit, depth=6, image_size=None, seed=0,
            **client):
    cfg = AttackConfig(dataset=dataset, data_root=root, batch_size=b, width=width, depth=depth,
                       batches=batches, time_limit=time_limit, seed=seed, image_size=image_size,
                       **client)
    exp = Experiment(cfg)
    rows = []
    for i in range(batches):
        rows.append(batch_row(exp.run_batch(i)))
        r = rows[-1]
        print(f"  {dataset:>13} m={width:<5} b={b:<3} batch {i}: recovered {r['recovered_fraction']:.2f} "
              f"psnr {r['psnr_mean'] if r['psnr_mean'] is None else round(r['psnr_mean'], 1)} "
              f"certified {r['certified']} {r['seconds']:.1f}s", flush=True)

    def med(k):
        v = [r[k] for r in rows if r[k] is not None]
        return statistics.median(v) if v else None

    return {"dataset": dataset, "image_size": image_size, "width": width, "depth": depth,
            "layer": cfg.layer, "protocol": cfg.protocol, "epochs": cfg.epochs,
            "mini_batch": cfg.mini_batch, "lr": cfg.lr, "dp_clip": cfg.dp_clip, "dp_sigma": cfg.dp_sigma,
            "b": b, "batches": batches, "time_limit": time_limit,
            "recovered_fraction": med("recovered_fraction"), "psnr": med("psnr_mean"),
            "discrete_accuracy": med("discrete_accuracy"),
            "certified_fraction": sum(bool(r["certified"]) for r in rows) / len(rows),
            "seconds_per_batch": med("seconds"), "samples_per_batch": med("samples"),
            "per_batch": rows}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="mnist,tiny-imagenet,imagenet,adult")
    p.add_argument("--data", default=os.environ.get("SPEAR_DATASETS",
                                                    str(Path(__file__).resolve().parents[2] / "shared" / "datasets")))
    p.add_argument("--batch-sizes", default="20")
    p.add_argument("--widths", default="200")
    p.add_argument("--batches", type=int, default=5)
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds per batch")
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--layer", type=int, default=0)
    p.add_argument("--protocol", default="fedsgd", choices=("fedsgd", "fedavg"))
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--mini-batch", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--dp-clip", type=float, default=None)
    p.add_argument("--dp-sigma", type=float, default=0.0)
    p.add_argument("--quick", action="store_true", help="b = 8, 2 batches (a few minutes on two cores)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.quick:
        a.batch_sizes, a.batches, a.time_limit = "8", 2, 120.0
    records = []
    for dataset in a.datasets.split(","):
        folder = FOLDERS[dataset]
        root = None if folder is None else str(Path(a.data) / folder)
        if root is not None and not Path(root).is_dir():
            print(f"skipping {dataset}: {root} not found")
            continue
        for width in (int(w) for w in a.widths.split(",")):
            for b in (int(v) for v in a.batch_sizes.split(",")):
                records.append(run_one(
                    dataset, root, b, width, a.batches, a.time_limit, depth=a.depth,
                    image_size=224 if dataset == "imagenet" else None, layer=a.layer,
                    protocol=a.protocol, epochs=a.epochs, mini_batch=a.mini_batch, lr=a.lr,
                    dp_clip=a.dp_clip, dp_sigma=a.dp_sigma))
    if a.json:
        write_json(records, a.json, machine())
    print(f"\n{'dataset':>13} {'m':>5} {'b':>3} {'recovered':>9} {'PSNR':>7} {'cert':>5} {'s/batch':>8}")
    for r in records:
        psnr = "-" if r["psnr"] is None else f"{r['psnr']:.1f}"
        print(f"{r['dataset']:>13} {r['width']:>5} {r['b']:>3} {r['recovered_fraction']:>9.2f} {psnr:>7} "
              f"{r['certified_fraction']:>5.2f} {r['seconds_per_batch']:>8.1f}")


if __name__ == "__main__":
    main()
