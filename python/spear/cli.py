"""The ``spear`` command line: ``spear demo`` and ``spear attack``."""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

DATASET_CHOICES = ("mnist", "cifar10", "tiny-imagenet", "imagenet", "adult", "digits")


def _add_attack_args(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--dataset", choices=DATASET_CHOICES, default="digits")
    a("--data-root", default=None, help="folder with the dataset in its original format")
    a("--batch-size", type=int, default=8, help="inputs per client batch (b)")
    a("--width", type=int, default=200, help="neurons per hidden layer (m)")
    a("--depth", type=int, default=6, help="linear layers in the network")
    a("--layer", type=int, default=0, help="linear layer to attack (0 = the input layer)")
    a("--protocol", choices=("fedsgd", "fedavg"), default="fedsgd")
    a("--epochs", type=int, default=1, help="FedAvg local epochs (E)")
    a("--mini-batch", type=int, default=None, help="FedAvg mini-batch size (default: whole batch)")
    a("--lr", type=float, default=0.01, help="FedAvg learning rate (eta)")
    a("--dp-clip", type=float, default=None, help="DP-SGD per-example clipping norm C")
    a("--dp-sigma", type=float, default=0.0, help="DP-SGD noise multiplier sigma")
    a("--batches", type=int, default=1, help="number of batches to attack (K)")
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--seed", type=int, default=0)
    a("--image-size", type=int, default=None, help="resize/crop images (ImageNet: 224 or 720)")
    a("--raw-pixels", action="store_true", help="feed raw pixels in [0,1] (no normalisation)")
    a("--label-homogeneous", action="store_true", help="draw each batch from a single class")
    a("--max-samples", type=int, default=None, help="sampling budget per batch")
    a("--time-limit", type=float, default=300.0, help="seconds per batch before giving up")
    a("--search", choices=("auto", "sample", "dictionary"), default="auto",
      help="where SPEAR's directions come from: the sampler, sparse dictionary recovery, or both")
    a("--method", choices=("spear", "inverting-gradients", "hybrid"), default="spear",
      help="spear: exact recovery; inverting-gradients: the optimization baseline (Geiping et al. "
           "2020); hybrid: SPEAR, then gradient matching from its partial result if it runs out of time")
    a("--model", choices=("fcnn", "vgg"), default="fcnn",
      help="fcnn: fully connected ReLU network; vgg: small VGG-style CNN (images; --width, --depth "
           "describe its linear head; SPEAR recovers the head's input features, then images)")
    a("--ig-iterations", type=int, default=2000, help="gradient-matching steps (paper: 24000)")
    a("--ig-restarts", type=int, default=1, help="gradient-matching random restarts")
    a("--ig-tv", type=float, default=1e-4, help="total-variation weight of the gradient matching")
    a("--channels", default="16,32", help="vgg: output channels of its conv blocks (each halves the size)")
    a("--feature-iterations", type=int, default=1000, help="CNN path: feature-inversion steps")
    a("--feature-tv", type=float, default=1e-2, help="CNN path: total-variation weight of the feature inversion")
    a("--refine-iterations", type=int, default=0,
      help="CNN path: gradient-matching steps started from the feature inversion (0: none)")
    a("--out", default=None, help="output folder (default: a new spear-out-<time> folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spear", description="Exact gradient inversion audit of a federated client (SPEAR).")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="attack a simulated client on built-in digits (no files)")
    demo.add_argument("--out", default=None, help="output folder (default: a new spear-demo-<time> folder)")
    demo.add_argument("--batch-size", type=int, default=12)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    attack = sub.add_parser("attack", help="attack K batches of a dataset and write reports")
    _add_attack_args(attack)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            return _run(_demo_config(args), args.out, prefix="spear-demo", progress=False)
        return _run(_attack_config(args), args.out, prefix="spear-out", progress=True)
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError) as e:
        print(f"spear: error: {e}", file=sys.stderr)
        return 2


def _demo_config(args):
    from .experiment import AttackConfig

    return AttackConfig(dataset="digits", batch_size=args.batch_size, seed=args.seed,
                        device=args.device, batches=1, time_limit=50.0)


def _attack_config(args):
    from .experiment import AttackConfig

    return AttackConfig(
        dataset=args.dataset, data_root=args.data_root, batch_size=args.batch_size,
        width=args.width, depth=args.depth, layer=args.layer, protocol=args.protocol,
        epochs=args.epochs, mini_batch=args.mini_batch, lr=args.lr, dp_clip=args.dp_clip,
        dp_sigma=args.dp_sigma, batches=args.batches, device=args.device, seed=args.seed,
        normalize=not args.raw_pixels, image_size=args.image_size,
        label_homogeneous=args.label_homogeneous, max_samples=args.max_samples,
        time_limit=args.time_limit, search=args.search, method=args.method, model=args.model,
        ig_iterations=args.ig_iterations, ig_restarts=args.ig_restarts, ig_tv=args.ig_tv,
        feature_iterations=args.feature_iterations, refine_iterations=args.refine_iterations,
        feature_tv=args.feature_tv, channels=_channels(args.channels))


def _channels(text: str) -> tuple[int, ...]:
    try:
        channels = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise ValueError(f"--channels must be a comma list of integers, got {text!r}") from None
    if not channels or min(channels) < 1:
        raise ValueError(f"--channels must be positive integers, got {text!r}")
    return channels


def _run(config, out: str | None, *, prefix: str, progress: bool) -> int:
    from tqdm.auto import tqdm

    from . import __version__, report
    from .experiment import Experiment, batch_row, summarize

    if config.batches < 1:
        raise ValueError(f"--batches must be >= 1, got {config.batches}")
    t0 = time.perf_counter()
    exp = Experiment(config)
    out_dir = Path(out) if out else Path(f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    bar = tqdm(range(config.batches), desc=f"{config.method} on {config.dataset} b={config.batch_size}",
               unit="batch", disable=not progress)
    for i in bar:
        r = exp.run_batch(i, progress=progress)
        rows.append(batch_row(r))
        bar.set_postfix(recovered=f"{rows[-1]['recovered_fraction']:.2f}", certified=str(rows[-1]["certified"]))
        _pictures(exp, r, out_dir)
    backend = rows[0]["backend"] if rows else None
    summary = summarize(config, rows, {
        "version": __version__, "backend": backend, "device": _device_name(backend),
        "python": platform.python_version(), "machine": platform.machine(),
        "seconds_total": round(time.perf_counter() - t0, 3),
        "recovered_definition": "relative L2 error of the matched input below 1e-3",
    })
    report.write_json(summary, out_dir / "summary.json")
    report.write_csv(rows, out_dir / "batches.csv")
    _print_summary(summary, out_dir)
    return 0


def _pictures(exp, r, out_dir: Path) -> None:
    from . import metrics, report

    ds = exp.dataset
    if r.truth_view is not None and ds.kind == "image":
        order = r.scores.get("permutation")
        report.image_grid(r.recon_view, r.truth_view, out_dir / f"batch_{r.index:03d}.png",
                          order=order)
    elif r.truth_view is not None and ds.kind == "tabular":
        report.write_table(r.recon_view, r.truth_view, out_dir / f"batch_{r.index:03d}_rows.csv")
    elif r.reconstruction is not None and r.reconstruction.inputs is not None:   # deeper layer: features, matched, as numbers
        perm = metrics.match(r.reconstruction.inputs, r.truth)
        np_rows = [{"input": i, "matched": int(j), "rel_err": float(e)}
                   for i, (j, e) in enumerate(zip(perm, r.scores.get("rel_err", [])))]
        report.write_csv(np_rows, out_dir / f"batch_{r.index:03d}_features.csv")


def _device_name(backend: str | None) -> str:
    if backend == "cuda":
        from . import _core

        return _core.cuda_device_name(0)
    return platform.processor() or platform.machine()


def _print_summary(s: dict, out_dir: Path) -> None:
    psnr = "n/a" if s["psnr_mean"] is None else f"{s['psnr_mean']:.1f} dB"
    print(f"method            {s['config']['method']} ({s['config']['model']})")
    print(f"batch size        {s['batch_size']}")
    print(f"batches           {s['batches']}")
    print(f"recovered         {100 * (s['recovered_fraction'] or 0):.1f}% of inputs (median over batches)")
    print(f"mean PSNR         {psnr}")
    print(f"certified         {100 * s['certified_fraction']:.0f}% of batches")
    print(f"time per batch    {s['seconds_per_batch']:.2f} s ({s['backend']})")
    print(f"reports           {out_dir}/")


if __name__ == "__main__":
    raise SystemExit(main())
