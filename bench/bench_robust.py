"""Robustness under realistic federated settings, in the shape of the paper's tables.

Sections (each a grid of client settings; every cell attacks the same batches):

  dp          DP-SGD noise sigma in {0, 1e-5, 1e-4, 1e-3, 1e-2} x clip C in {1, 10}
  fedavg      FedAvg epochs E in {1, 2, 5, 10} x mini-batch {b, b/2, b/4} x lr {0.1, 0.01, 0.001}
  layers      attacked layer l = 1..5 of a 6-layer network (input features of that layer)
  homogeneous label-homogeneous against mixed batches

Per cell: PSNR (median over batches of the per-batch mean over matched inputs; for
layers > 1 the features' relative error instead), fraction of inputs recovered exactly
(relative error < 1e-3), fraction of inputs above 40 dB, fraction of batches complete and
certified, noise level, graded violation rate and seconds per batch. A batch the attack
does not complete within the time limit scores nothing (no partial guess).

``--dp-engine opacus`` makes the DP cells' clients Opacus DP-SGD clients (PrivacyEngine,
Poisson sampling over the client's batch, RDP accountant; ``spear[opacus]``), and the DP
table gains (epsilon, delta) for one step; ``hand`` (the default) is spear's own DP-SGD.

    python bench/bench_robust.py --quick
    python bench/bench_robust.py --quick --sections dp --dp-engine opacus
    python bench/bench_robust.py --from-json a.json b.json --plot psnr.png   # redraw only
    python bench/bench_robust.py --datasets tiny-imagenet --batches 2 \\
        --json bench/results/robust_tiny-imagenet.json --plot bench/results/robust_psnr_sigma.png
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import dataset_root, machine, write_json  # noqa: E402

from spear.data import load_dataset  # noqa: E402
from spear.experiment import AttackConfig, Experiment, batch_row, fraction, median  # noqa: E402
from spear.fl import ClientConfig  # noqa: E402
from spear.settings import add_arguments  # noqa: E402

SECTIONS = ("dp", "fedavg", "layers", "homogeneous")
SIGMAS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2)
CLIPS = (1.0, 10.0)
EPOCHS = (1, 2, 5, 10)
MINI_DIVISORS = (1, 2, 4)
LRS = (0.1, 0.01, 0.001)
GOOD_DB = 40.0
DP_ENGINES = ("hand", "opacus")
#: This benchmark's own defaults (many cells: short limits, few batches).
BENCH_DEFAULTS = {"batch_size": 20, "batches": 2, "time_limit": 30.0}


def cells(section: str, b: int, quick: bool):
    """(label, client config, layer, label_homogeneous) for each cell of a section."""
    if section == "dp":
        for clip in CLIPS[:1] if quick else CLIPS:
            for sigma in (0.0, 1e-4) if quick else SIGMAS:
                yield {"clip": clip, "sigma": sigma}, ClientConfig(dp_clip=clip, dp_sigma=sigma), 0, False
    elif section == "fedavg":
        grid = [(5, 4, 0.01)] if quick else [(e, d, lr) for e in EPOCHS for d in MINI_DIVISORS for lr in LRS]
        for epochs, div, lr in grid:
            mini = max(1, b // div)
            yield ({"epochs": epochs, "mini_batch": mini, "lr": lr},
                   ClientConfig(protocol="fedavg", epochs=epochs, mini_batch=mini, lr=lr), 0, False)
    elif section == "layers":
        for layer in (1, 3) if quick else (1, 2, 3, 4, 5):
            yield {"layer": layer}, ClientConfig(), layer - 1, False
    elif section == "homogeneous":
        for homogeneous in (False, True):
            yield {"label_homogeneous": homogeneous}, ClientConfig(), 0, homogeneous
    else:
        raise ValueError(f"unknown section {section!r}; known: {', '.join(SECTIONS)}")


def attack_batch(exp: Experiment, i: int) -> dict:
    """Batch ``i`` through the experiment's wiring; the row this benchmark tabulates."""
    r = exp.run_batch(i)
    row = batch_row(r)
    out = {"complete": row["complete"], "certified": bool(row["certified"]), "seconds": row["seconds"],
           "noise_level": row["noise_level"], "violation_rate": row["violation_rate"],
           "psnr": row["psnr_mean"], "good_fraction": 0.0, "recovered_fraction": row["recovered_fraction"],
           "rel_err_median": None}
    rec = r.reconstruction
    if rec is None or rec.inputs is None:
        return out
    if "psnr" in r.scores:
        out["good_fraction"] = float(np.mean(np.asarray(r.scores["psnr"]) >= GOOD_DB))
    out["rel_err_median"] = float(np.nanmedian(r.scores["rel_err"]))
    return out


def summarize(rows):
    def med(key):
        return median(rows, key)

    return {"batches": len(rows), "psnr": med("psnr"), "rel_err_median": med("rel_err_median"),
            "recovered_fraction": med("recovered_fraction"), "good_fraction": med("good_fraction"),
            "complete_fraction": fraction(rows, "complete"),
            "certified_fraction": fraction(rows, "certified"),
            "noise_level": med("noise_level"), "violation_rate": med("violation_rate"),
            "seconds_per_batch": med("seconds"), "per_batch": rows}


class OpacusClient:
    """An Opacus DP-SGD client for :class:`Experiment`; keeps the (epsilon, delta) it reported."""

    def __init__(self):
        self.privacy: list[tuple[float, float]] = []

    def __call__(self, model, x, y, config):
        from spear.integrations.opacus import opacus_client_update

        sent = opacus_client_update(model, x, y, config)
        self.privacy.append((sent.epsilon, sent.delta))
        return sent.update


def run(dataset, root, sections, b, width, depth, batches, time_limit, quick, seed=0, dp_engine="hand"):
    from tqdm.auto import tqdm

    ds = load_dataset(dataset, root)
    todo = [(sec, *cell) for sec in sections for cell in cells(sec, b, quick)]
    records = []
    for section, setting, config, layer, homogeneous in tqdm(todo, desc=dataset, unit="cell"):
        client = {k: v for k, v in config.__dict__.items() if k != "seed"}
        cfg = AttackConfig(dataset=dataset, data_root=root, batch_size=b, width=width, depth=depth,
                           layer=layer, batches=batches, time_limit=time_limit, seed=seed,
                           label_homogeneous=homogeneous, **client)
        opacus = OpacusClient() if section == "dp" and dp_engine == "opacus" else None
        exp = Experiment(cfg, dataset=ds, client=opacus)      # same seed: the same model in every cell
        rows = [attack_batch(exp, i) for i in range(batches)]
        extra = {}
        if opacus is not None:                                 # one step each: the same epsilon per batch
            epsilon = max(e for e, _ in opacus.privacy)
            extra = {"dp_engine": "opacus", "epsilon": None if epsilon == float("inf") else epsilon,
                     "delta": opacus.privacy[0][1]}     # epsilon null: no noise, no guarantee
        records.append({"dataset": dataset, "section": section, "setting": setting, "b": b,
                        "width": width, "depth": depth, "time_limit": time_limit, **extra, **summarize(rows)})
    return records


def _fmt(v, spec=".1f", none="-"):
    return none if v is None else format(v, spec)


def tables(records) -> str:
    """Markdown tables, one per dataset and section."""
    out = []
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        for section in SECTIONS:
            rows = [r for r in records if r["dataset"] == dataset and r["section"] == section]
            if not rows:
                continue
            keys = list(rows[0]["setting"])
            privacy = "epsilon" in rows[0]
            metric = "feature rel. error" if section == "layers" else "PSNR dB"
            engine = f", Opacus clients, epsilon at delta = {rows[0]['delta']:g}" if privacy else ""
            out.append(f"\n{dataset}, {section} (b = {rows[0]['b']}, {rows[0]['batches']} batches, "
                       f"{rows[0]['time_limit']:g} s limit{engine})\n")
            eps_head = ["epsilon"] if privacy else []
            out.append("| " + " | ".join(keys + eps_head + [metric, "recovered", f">= {GOOD_DB:g} dB", "complete",
                                                 "certified", "noise level", "violation rate", "s / batch"]) + " |")
            out.append("|" + " --- |" * (len(keys) + len(eps_head) + 8))
            for r in rows:
                m = _fmt(r["rel_err_median"], ".1e") if section == "layers" else _fmt(r["psnr"])
                good = "-" if section == "layers" else _fmt(r["good_fraction"], ".2f")
                eps = [_fmt_eps(r["epsilon"])] if privacy else []
                out.append("| " + " | ".join([str(r["setting"][k]) for k in keys] + eps + [
                    m, _fmt(r["recovered_fraction"], ".2f"), good, _fmt(r["complete_fraction"], ".2f"),
                    _fmt(r["certified_fraction"], ".2f"), _fmt(r["noise_level"], ".1e"),
                    _fmt(r["violation_rate"], ".3f"), _fmt(r["seconds_per_batch"], ".1f")]) + " |")
    return "\n".join(out)


def _fmt_eps(epsilon):
    return "inf" if epsilon is None else format(epsilon, ".3g")


def plot(records, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    floor = 5.0                           # where a failed cell is drawn
    for dataset in dict.fromkeys(r["dataset"] for r in records):
        for clip in CLIPS:
            rows = [r for r in records if r["dataset"] == dataset and r["section"] == "dp"
                    and r["setting"]["clip"] == clip]
            if not rows:
                continue
            xs = [max(r["setting"]["sigma"], 1e-6) for r in rows]
            ys = [r["psnr"] if r["psnr"] is not None else floor for r in rows]
            ax.plot(xs, ys, marker="o", label=f"{dataset}, C = {clip:g}")
    ax.axhline(floor, color="grey", lw=0.5, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("DP noise sigma (0 drawn at 1e-6)")
    ax.set_ylabel("PSNR dB (failed: 5)")
    ax.set_title("SPEAR under DP-SGD noise")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="tiny-imagenet,mnist")
    p.add_argument("--data", default=os.environ.get("SPEAR_DATASETS",
                                                    str(Path(__file__).resolve().parents[2] / "shared" / "datasets")))
    p.add_argument("--sections", default=",".join(SECTIONS))
    add_arguments(p, AttackConfig, only=("batch_size", "width", "depth", "batches", "time_limit"),
                  overrides=BENCH_DEFAULTS)
    p.add_argument("--quick", action="store_true",
                   help="a few cells of each section, 1 batch, b = 8, digits if no datasets folder")
    p.add_argument("--dp-engine", choices=DP_ENGINES, default="hand",
                   help="DP cells: spear's own DP-SGD client (hand) or Opacus's PrivacyEngine, which reports "
                        "epsilon (needs spear[opacus])")
    p.add_argument("--json", default=None)
    p.add_argument("--plot", default=None, help="PNG of PSNR against sigma")
    p.add_argument("--markdown", default=None, help="write the tables here too")
    p.add_argument("--from-json", nargs="+", default=None, metavar="JSON",
                   help="no attack: redraw tables and plot from earlier --json files")
    a = p.parse_args()
    if a.from_json:
        import json

        records = [r for path in a.from_json for r in json.loads(Path(path).read_text())]
        text = tables(records)
        print(text)
        if a.markdown:
            Path(a.markdown).write_text(text + "\n")
        if a.plot:
            plot(records, a.plot)
        return
    torch.set_num_threads(1)
    if a.quick:
        a.batches, a.batch_size, a.time_limit = 1, 8, 20.0
    sections = [s.strip() for s in a.sections.split(",") if s.strip()]
    for s in sections:
        if s not in SECTIONS:
            p.error(f"unknown section {s!r}; known: {', '.join(SECTIONS)}")
    records = []
    for dataset in a.datasets.split(","):
        available, root = dataset_root(a.data, dataset)
        if not available:
            if a.quick and not records and dataset == a.datasets.split(",")[-1]:
                dataset, root = "digits", None
            else:
                continue
        records += run(dataset, root, sections, a.batch_size, a.width, a.depth, a.batches,
                       a.time_limit, a.quick, dp_engine=a.dp_engine)
    if a.json:                      # first: a table that fails to print loses no measurement
        write_json(records, a.json, machine())
    text = tables(records)
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text + "\n")
    if a.plot:
        plot(records, a.plot)


if __name__ == "__main__":
    main()
