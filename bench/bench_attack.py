"""End-to-end attack: time per batch and reconstruction quality on the paper's settings.

6-layer FCNN, first layer, width 200 (and 2000), on MNIST, TinyImageNet, ImageNet 224 and
ADULT from a datasets folder (default ../shared/datasets or $SPEAR_DATASETS). Medians over
batches; one JSON record per (dataset, width, batch size, method).

``--methods spear,inverting-gradients[,hybrid]`` runs the same batches (same seeds, same
model) through each method; ``--grids DIR`` draws originals and every method's
reconstruction side by side. ``--model vgg`` attacks a small VGG-style CNN (SPEAR on its
first linear layer, then feature inversion).

    python bench/bench_attack.py --quick --json out.json
    python bench/bench_attack.py --datasets mnist,adult --batch-sizes 16,20 --batches 5
    python bench/bench_attack.py --datasets tiny-imagenet --batch-sizes 8 --batches 1 \
        --methods spear,inverting-gradients --ig-iterations 1000 --grids /tmp/grids

SPEAR + optimization (``bench/results/spear_opt_tiny-imagenet.json``): SPEAR with a time
limit, Inverting Gradients alone, and the hybrid (gradient matching held to SPEAR's
directions) on the same batch:

    python bench/bench_attack.py --datasets tiny-imagenet --widths 400,2000 --batch-sizes 50,100 \
        --batches 1 --methods spear,inverting-gradients,hybrid --time-limit 60 --ig-iterations 500 \
        --threads 1 --json bench/results/spear_opt_tiny-imagenet.json
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dataset_root, machine, write_json  # noqa: E402

from spear import report  # noqa: E402
from spear.experiment import METHODS, AttackConfig, Experiment, batch_row, fraction, median  # noqa: E402
from spear.settings import add_arguments, from_args  # noqa: E402

LABELS = {"spear": "SPEAR", "inverting-gradients": "Inv. Gradients", "hybrid": "hybrid"}
#: Swept here (comma lists), so not taken from AttackConfig's single-valued options.
SWEPT = ("dataset", "data_root", "batch_size", "width", "method", "image_size")
#: This benchmark's own defaults (the paper's settings: 5 batches, 10 minutes each).
BENCH_DEFAULTS = {"batches": 5, "time_limit": 600.0}


def run_one(base: AttackConfig, methods=("spear",), grids=None):
    """One record per method; the methods see the same batches of the same model."""
    exps = {m: Experiment(dataclasses.replace(base, method=m)) for m in methods}
    rows = {m: [] for m in methods}
    for i in range(base.batches):
        results = {}
        for method, exp in exps.items():
            results[method] = res = exp.run_batch(i)
            rows[method].append(batch_row(res))
            r = rows[method][-1]
            print(f"  {base.dataset:>13} m={base.width:<5} b={base.batch_size:<3} {method:>19} batch {i}: recovered "
                  f"{r['recovered_fraction']:.2f} psnr {_round(r['psnr_mean'])} ssim {_round(r['ssim_mean'], 3)} "
                  f"certified {r['certified']} directions {r['directions_found']} "
                  f"loss {_round(r['optimization_loss'], 4)} {r['seconds']:.1f}s", flush=True)
        if grids is not None:
            _grid(results, Path(grids) / f"{base.dataset}_{base.model}_b{base.batch_size}_batch{i}.png")
    return [_record(exps[m].config, rows[m]) for m in methods]


def _round(v, digits=1):
    return None if v is None else round(v, digits)


def _grid(results, path):
    truth = next((r.truth_view for r in results.values() if r.truth_view is not None), None)
    if truth is None or truth.ndim != 4:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [(LABELS.get(m, m), None if r.recon_view is None else np.clip(r.recon_view, 0, 1),
             r.scores.get("permutation")) for m, r in results.items()]
    report.comparison_grid(truth, rows, path)
    print(f"  grid: {path}")


def _record(cfg, rows):
    def med(k):
        return median(rows, k)

    record = {"dataset": cfg.dataset, "image_size": cfg.image_size, "method": cfg.method, "model": cfg.model,
              "width": cfg.width, "depth": cfg.depth,
              "layer": cfg.layer, "protocol": cfg.protocol, "epochs": cfg.epochs,
              "mini_batch": cfg.mini_batch, "lr": cfg.lr, "dp_clip": cfg.dp_clip, "dp_sigma": cfg.dp_sigma,
              "b": cfg.batch_size, "batches": cfg.batches, "time_limit": cfg.time_limit, "search": cfg.search,
              "recovered_fraction": med("recovered_fraction"), "psnr": med("psnr_mean"),
              "ssim": med("ssim_mean"), "discrete_accuracy": med("discrete_accuracy"),
              "certified_fraction": fraction(rows, "certified"),
              "seconds_per_batch": med("seconds"), "samples_per_batch": med("submatrices_sampled"),
              "directions_found": med("directions_found"), "optimization_loss": med("optimization_loss"),
              "per_batch": rows}
    if cfg.method != "spear" or cfg.model == "vgg":
        record.update(ig_iterations=cfg.ig_iterations, ig_restarts=cfg.ig_restarts, ig_lr=cfg.ig_lr,
                      ig_tv=cfg.ig_tv, max_samples=cfg.max_samples)
    if cfg.model == "vgg":
        record.update(channels=list(cfg.channels), feature_iterations=cfg.feature_iterations,
                      feature_tv=cfg.feature_tv,
                      feature_inversion_rel_err=med("feature_inversion_rel_err"),
                      psnr_before_refine=med("psnr_before_refine"), ssim_before_refine=med("ssim_before_refine"),
                      refine_iterations=cfg.refine_iterations,
                      feature_recovered_fraction=med("feature_recovered_fraction"),
                      feature_rel_err_max=med("feature_rel_err_max"))
    return record


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="mnist,tiny-imagenet,imagenet,adult")
    p.add_argument("--data", default=os.environ.get("SPEAR_DATASETS",
                                                    str(Path(__file__).resolve().parents[2] / "shared" / "datasets")))
    p.add_argument("--batch-sizes", default="20")
    p.add_argument("--widths", default="200")
    p.add_argument("--methods", default="spear", help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--image-size", type=int, default=None, help="ImageNet crop size (default 224)")
    add_arguments(p, AttackConfig, skip=SWEPT, overrides=BENCH_DEFAULTS)
    p.add_argument("--grids", default=None, help="folder for PNG grids: originals above each method's row")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--quick", action="store_true", help="b = 8, 2 batches (a few minutes on two cores)")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    if a.quick:
        a.batch_sizes, a.batches, a.time_limit = "8", 2, 120.0
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    methods = tuple(a.methods.split(","))
    for m in methods:
        if m not in METHODS:
            p.error(f"unknown method {m!r}; known: {', '.join(METHODS)}")
    records = []
    for dataset in a.datasets.split(","):
        available, root = dataset_root(a.data, dataset)
        if not available:
            continue
        for width in (int(w) for w in a.widths.split(",")):
            for b in (int(v) for v in a.batch_sizes.split(",")):
                base = from_args(AttackConfig, a, base=None)
                base = dataclasses.replace(base, dataset=dataset, data_root=root, batch_size=b, width=width,
                                           image_size=(a.image_size or 224) if dataset == "imagenet" else None)
                load = os.getloadavg()[0]
                for r in run_one(base, methods, grids=a.grids):
                    # The 1-minute load average before and after: the machine may be shared.
                    records.append({**r, "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)})
                if a.json:      # after every configuration: a long grid cut short keeps what ran
                    write_json(records, a.json, machine())
    print(f"\n{'dataset':>13} {'method':>19} {'m':>5} {'b':>3} {'recovered':>9} {'PSNR':>7} {'SSIM':>6} "
          f"{'cert':>5} {'s/batch':>8}")
    for r in records:
        psnr = "-" if r["psnr"] is None else f"{r['psnr']:.1f}"
        ssim = "-" if r["ssim"] is None else f"{r['ssim']:.3f}"
        print(f"{r['dataset']:>13} {r['method']:>19} {r['width']:>5} {r['b']:>3} {r['recovered_fraction']:>9.2f} "
              f"{psnr:>7} {ssim:>6} {r['certified_fraction']:>5.2f} {r['seconds_per_batch']:>8.1f}")


if __name__ == "__main__":
    main()
