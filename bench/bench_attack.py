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
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dataset_root, machine, write_json  # noqa: E402

from spear import report  # noqa: E402
from spear.experiment import AttackConfig, Experiment, batch_row  # noqa: E402

LABELS = {"spear": "SPEAR", "inverting-gradients": "Inv. Gradients", "hybrid": "hybrid"}


def run_one(dataset, root, b, width, batches, time_limit, depth=6, image_size=None, seed=0,
            methods=("spear",), grids=None, **options):
    """One record per method; the methods see the same batches of the same model."""
    exps = {}
    for method in methods:
        cfg = AttackConfig(dataset=dataset, data_root=root, batch_size=b, width=width, depth=depth,
                           batches=batches, time_limit=time_limit, seed=seed, image_size=image_size,
                           method=method, **options)
        exps[method] = Experiment(cfg)
    rows = {m: [] for m in methods}
    for i in range(batches):
        results = {}
        for method, exp in exps.items():
            results[method] = res = exp.run_batch(i)
            rows[method].append(batch_row(res))
            r = rows[method][-1]
            print(f"  {dataset:>13} m={width:<5} b={b:<3} {method:>19} batch {i}: recovered "
                  f"{r['recovered_fraction']:.2f} psnr {_round(r['psnr_mean'])} ssim {_round(r['ssim_mean'], 3)} "
                  f"certified {r['certified']} {r['seconds']:.1f}s", flush=True)
        if grids is not None:
            _grid(results, Path(grids) / f"{dataset}_{options.get('model', 'fcnn')}_b{b}_batch{i}.png")
    return [_record(exps[m].config, rows[m], dataset, image_size, width, depth, b, batches, time_limit)
            for m in methods]


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


def _record(cfg, rows, dataset, image_size, width, depth, b, batches, time_limit):
    def med(k):
        v = [r[k] for r in rows if r[k] is not None]
        return statistics.median(v) if v else None

    record = {"dataset": dataset, "image_size": image_size, "method": cfg.method, "model": cfg.model,
              "width": width, "depth": depth,
              "layer": cfg.layer, "protocol": cfg.protocol, "epochs": cfg.epochs,
              "mini_batch": cfg.mini_batch, "lr": cfg.lr, "dp_clip": cfg.dp_clip, "dp_sigma": cfg.dp_sigma,
              "b": b, "batches": batches, "time_limit": time_limit, "search": cfg.search,
              "recovered_fraction": med("recovered_fraction"), "psnr": med("psnr_mean"),
              "ssim": med("ssim_mean"), "discrete_accuracy": med("discrete_accuracy"),
              "certified_fraction": sum(bool(r["certified"]) for r in rows) / len(rows),
              "seconds_per_batch": med("seconds"), "samples_per_batch": med("samples"),
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
    p.add_argument("--methods", default="spear", help="comma list of spear, inverting-gradients, hybrid")
    p.add_argument("--model", default="fcnn", choices=("fcnn", "vgg"))
    p.add_argument("--image-size", type=int, default=None, help="ImageNet crop size (default 224)")
    p.add_argument("--search", default="auto", choices=("auto", "sample", "dictionary"))
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--ig-iterations", type=int, default=2000)
    p.add_argument("--ig-restarts", type=int, default=1)
    p.add_argument("--ig-tv", type=float, default=1e-4)
    p.add_argument("--feature-iterations", type=int, default=1000)
    p.add_argument("--feature-tv", type=float, default=1e-2)
    p.add_argument("--channels", default="16,32", help="vgg conv channels")
    p.add_argument("--refine-iterations", type=int, default=0)
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
    records = []
    for dataset in a.datasets.split(","):
        available, root = dataset_root(a.data, dataset)
        if not available:
            continue
        for width in (int(w) for w in a.widths.split(",")):
            for b in (int(v) for v in a.batch_sizes.split(",")):
                records.extend(run_one(
                    dataset, root, b, width, a.batches, a.time_limit, depth=a.depth,
                    image_size=(a.image_size or 224) if dataset == "imagenet" else None, layer=a.layer,
                    protocol=a.protocol, epochs=a.epochs, mini_batch=a.mini_batch, lr=a.lr,
                    dp_clip=a.dp_clip, dp_sigma=a.dp_sigma, methods=methods, grids=a.grids,
                    model=a.model, search=a.search, max_samples=a.max_samples,
                    ig_iterations=a.ig_iterations, ig_restarts=a.ig_restarts, ig_tv=a.ig_tv,
                    feature_iterations=a.feature_iterations, refine_iterations=a.refine_iterations,
                    feature_tv=a.feature_tv, channels=tuple(int(c) for c in a.channels.split(","))))
    if a.json:
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
