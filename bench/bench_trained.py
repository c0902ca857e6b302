"""Trained networks: attack the first layer of models at training checkpoints.

Trains the paper's FCNN (6 linear layers, width 200) and a width-1000 MLP (two hidden
layers) with SGD (momentum 0.9, lr 0.05, batch 64) on the first 8,000 samples of a dataset,
and at each checkpoint (init, 1/10 epoch, 1 epoch, ... in epochs) attacks float32
first-layer gradients of held-out batches with ``spear.reconstruct``. Reports per cell:
verdicts, inputs recovered (matched relative error below 1e-3 and 1e-2), seconds.

    python bench/bench_trained.py --data-root ../shared/datasets/mnist --dataset mnist \\
        --checkpoints 0 0.1 1 3 --bs 8 20 50 100 --batches 2 --json out.json --markdown out.md
    python bench/bench_trained.py --quick --data-root ../shared/datasets/mnist
    python bench/bench_trained.py --from-json out.json --plot out.png   # redraw a saved run

The JSON is rewritten after every cell, so a run stopped part way keeps what it measured.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

import spear
from spear.data import load_dataset
from spear.fl import TrainConfig, make_fcnn, train_classifier

#: Models: name -> (width, depth) of spear.fl.make_fcnn.
MODELS = {"fcnn200": (200, 6), "mlp1000": (1000, 3)}
TRAIN = 8000


def matched_errors(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Relative error of each true input against its Hungarian-matched reconstruction
    (inf for inputs a partial result does not contain)."""
    d = ((recon[:, None, :] - truth[None, :, :]) ** 2).sum(-1)
    i, j = linear_sum_assignment(d)
    err = np.full(len(truth), np.inf)
    err[j] = np.sqrt(d[i, j]) / np.linalg.norm(truth[j], axis=1)
    return err


def machine() -> dict:
    import os
    import platform
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average": [round(v, 2) for v in os.getloadavg()], "torch_threads": 1}


def attack_cell(net, x, y, b, batches, time_limit, seed, train=TRAIN):
    rows = []
    for k in range(batches):
        lo = train + k * b
        xb, yb = torch.from_numpy(x[lo:lo + b]), torch.from_numpy(y[lo:lo + b]).long()
        loss = torch.nn.functional.cross_entropy(net(xb), yb)
        gw, gb = torch.autograd.grad(loss, [net[0].weight, net[0].bias])
        t0 = time.perf_counter()
        try:
            rec = spear.reconstruct(gw, gb, b, weight=net[0].weight.detach(),
                                    bias=net[0].bias.detach(), time_limit=time_limit, seed=seed + k)
        except ValueError as e:            # e.g. a batch size the gradient cannot show
            rows.append({"verdict": "error", "error": str(e), "seconds": time.perf_counter() - t0})
            continue
        err = (matched_errors(rec.inputs, xb.double().numpy()) if rec.inputs is not None
               else np.full(b, np.inf))
        rows.append({"verdict": rec.verdict, "certified": bool(rec.certified),
                     "within_1e-3": int((err < 1e-3).sum()), "within_1e-2": int((err < 1e-2).sum()),
                     "seconds": round(time.perf_counter() - t0, 2), "diagnosis": rec.diagnosis})
    return rows


def run(args, save=lambda records: None):
    ds = load_dataset(args.dataset, args.data_root)
    x, y = ds.get(np.arange(len(ds)))
    x = x.astype(np.float32)
    if len(x) < args.train + max(args.bs) * args.batches:
        raise SystemExit(f"{args.dataset} has {len(x)} samples; need {args.train} to train and "
                         f"{max(args.bs) * args.batches} held out")
    classes = int(y.max()) + 1
    records = []
    for model in args.models:
        width, depth = MODELS[model]
        net = make_fcnn(x.shape[1], classes, width=width, depth=depth, seed=args.seed)
        steps_per_epoch = args.train / 64
        marks = {int(round(e * steps_per_epoch)): e for e in args.checkpoints}

        def at(step, m, model=model):
            for b in args.bs:
                rows = attack_cell(m, x, y, b, args.batches, args.time_limit, args.seed, args.train)
                rec = {"dataset": args.dataset, "model": model, "epochs": marks[step], "b": b,
                       "batches": rows}
                records.append(rec)
                save(records)
                print(json.dumps({k: v for k, v in rec.items() if k != "batches"}),
                      [(r["verdict"], r.get("within_1e-3"), r["seconds"]) for r in rows], flush=True)

        train_classifier(net, x[:args.train], y[:args.train],
                         TrainConfig(epochs=max(args.checkpoints), seed=args.seed),
                         checkpoints=marks, on_checkpoint=at)
    return records


def markdown(records) -> str:
    lines = ["| dataset | model | epochs | b | verdicts | inputs within 1e-3 | within 1e-2 | s / batch (median) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        rows = r["batches"]
        verdicts = ", ".join(sorted({x["verdict"] for x in rows}))
        n = r["b"] * len(rows)
        w3 = sum(x.get("within_1e-3", 0) for x in rows)
        w2 = sum(x.get("within_1e-2", 0) for x in rows)
        sec = float(np.median([x["seconds"] for x in rows]))
        lines.append(f"| {r['dataset']} | {r['model']} | {r['epochs']:g} | {r['b']} | {verdicts} | "
                     f"{w3}/{n} | {w2}/{n} | {sec:.1f} |")
    return "\n".join(lines) + "\n"


def plot(records, path) -> None:
    """Inputs within 1e-3 (fraction) against training epochs, one panel per dataset and
    model, one line per batch size."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in records})
    models = sorted({r["model"] for r in records})
    fig, axes = plt.subplots(len(models), len(datasets), figsize=(4.2 * len(datasets), 3.2 * len(models)),
                             squeeze=False)
    for ax, (model, ds) in zip(axes.ravel(), [(m, d) for m in models for d in datasets]):
        mine = [r for r in records if (r["dataset"], r["model"]) == (ds, model)]
        for b in sorted({r["b"] for r in mine}):
            pts = sorted((r["epochs"], sum(x.get("within_1e-3", 0) for x in r["batches"])
                          / (b * len(r["batches"]))) for r in mine if r["b"] == b)
            ax.plot([e for e, _ in pts], [f for _, f in pts], "o-", label=f"b = {b}")
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(f"{ds}, {model}")
        ax.set_xlabel("training epochs")
        ax.set_ylabel("inputs within 1e-3")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-root", help="folder with the dataset in its original format "
                   "(not needed for the built-in digits)")
    p.add_argument("--train", type=int, default=TRAIN, help="training samples (default: %(default)s); "
                   "the batches attacked are held out after them")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--checkpoints", nargs="+", type=float, default=[0, 0.1, 1, 3],
                   help="epochs at which to attack (default: %(default)s)")
    p.add_argument("--bs", nargs="+", type=int, default=[8, 20, 50, 100])
    p.add_argument("--batches", type=int, default=2)
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="b = 20, checkpoints 0 and 1, one batch")
    p.add_argument("--json")
    p.add_argument("--markdown")
    p.add_argument("--plot", help="PNG: inputs recovered against training epochs")
    p.add_argument("--from-json", help="redraw the table and plot of a saved run (no attack)")
    args = p.parse_args(argv)
    for out in (args.json, args.markdown):
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
    if args.quick:
        args.bs, args.checkpoints, args.batches = [20], [0, 1], 1
    torch.set_num_threads(1)
    if args.from_json:
        records = json.loads(Path(args.from_json).read_text())["records"]
    else:
        command = "python bench/bench_trained.py " + " ".join(sys.argv[1:] if argv is None else argv)
        started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())

        def save(records):
            if args.json:
                Path(args.json).write_text(json.dumps(
                    {"command": command, "started": started, "machine": machine(), "records": records},
                    indent=1))
        records = run(args, save)
    if args.plot:
        plot(records, args.plot)
    table = markdown(records)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table)


if __name__ == "__main__":
    main()
