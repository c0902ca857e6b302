"""One audit run: simulate an honest client, attack the update it sends, score the result.

The only module besides the CLI and the benchmarks that wires data, client simulation,
attack and metrics together (see ARCHITECTURE.md).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from . import metrics
from .attack import Reconstruction, reconstruct
from .data import Dataset, load_dataset
from .fl import ClientConfig, attackable_layer, client_update, layer_input, layer_payload, make_fcnn


@dataclass
class AttackConfig:
    """Everything that defines an audit run (written verbatim into summary.json)."""

    dataset: str = "digits"
    data_root: str | None = None
    batch_size: int = 8
    width: int = 200
    depth: int = 6
    layer: int = 0
    protocol: str = "fedsgd"
    epochs: int = 1
    mini_batch: int | None = None
    lr: float = 0.01
    dp_clip: float | None = None
    dp_sigma: float = 0.0
    batches: int = 1
    device: str = "auto"
    seed: int = 0
    normalize: bool = True
    image_size: int | None = None
    label_homogeneous: bool = False
    max_samples: int | None = None
    time_limit: float | None = None
    method: str = "auto"

    def client(self, batch: int) -> ClientConfig:
        return ClientConfig(protocol=self.protocol, epochs=self.epochs, mini_batch=self.mini_batch,
                            lr=self.lr, dp_clip=self.dp_clip, dp_sigma=self.dp_sigma,
                            seed=self.seed + batch)


@dataclass
class BatchResult:
    index: int
    reconstruction: Reconstruction
    scores: dict[str, Any]
    truth: np.ndarray                  # what the attacked layer saw (b x n)
    truth_view: Any = None             # pixels (k,C,H,W) or decoded table, for reports
    recon_view: Any = None
    seconds: float = 0.0
    labels: np.ndarray = field(default_factory=lambda: np.empty(0))


class Experiment:
    """Dataset, model and attack settings of one run; ``run_batch(i)`` attacks batch i."""

    def __init__(self, config: AttackConfig):
        self.config = c = config
        options = {} if c.image_size is None else {"image_size": c.image_size}
        self.dataset: Dataset = load_dataset(c.dataset, c.data_root, normalize=c.normalize, **options)
        if c.batch_size < 1 or c.batch_size > len(self.dataset):
            raise ValueError(f"batch size {c.batch_size} is not possible with {len(self.dataset)} samples")
        self.model = make_fcnn(self.dataset.input_dim, self.dataset.num_classes, width=c.width,
                               depth=c.depth, seed=c.seed)
        n_layers = c.depth - 1       # the last linear layer has no ReLU after it
        if not 0 <= c.layer < n_layers:
            raise ValueError(f"layer {c.layer} cannot be attacked: a depth-{c.depth} network has "
                             f"attackable layers 0..{n_layers - 1} (each followed by a ReLU)")
        attackable_layer(self.model, c.layer)
        fan_in = self.dataset.input_dim if c.layer == 0 else c.width
        if c.batch_size > min(c.width, fan_in):
            raise ValueError(f"batch size {c.batch_size} exceeds what layer {c.layer} can reveal: "
                             f"its gradient is {c.width} x {fan_in}, so b <= {min(c.width, fan_in)}")

    def run_batch(self, i: int, *, progress: bool = False) -> BatchResult:
        c, ds = self.config, self.dataset
        x_np, y_np, _ = ds.sample_batch(c.batch_size, seed=c.seed * 100_003 + i,
                                        label_homogeneous=c.label_homogeneous)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        update = client_update(self.model, x, y, c.client(i))
        payload = layer_payload(self.model, update, c.layer)
        truth = layer_input(self.model, x, c.layer).detach().double().numpy()
        t0 = time.perf_counter()
        rec = reconstruct(payload.grad_weight, payload.grad_bias, c.batch_size,
                          weight=payload.weight, bias=payload.bias, device=c.device,
                          seed=c.seed + i, max_samples=c.max_samples, time_limit=c.time_limit,
                          progress=progress, method=c.method)
        seconds = time.perf_counter() - t0
        result = BatchResult(i, rec, {}, truth, seconds=seconds, labels=y_np)
        self._score(result)
        return result

    def _score(self, r: BatchResult) -> None:
        ds, rec = self.dataset, r.reconstruction
        recon = rec.inputs if rec.inputs is not None else np.empty((0, r.truth.shape[1]))
        if self.config.layer > 0:
            r.scores = metrics.feature_metrics(recon, r.truth)
            return
        if ds.kind == "image":
            r.truth_view = ds.to_pixels(r.truth)
            r.recon_view = ds.to_pixels(recon) if len(recon) else None
            if r.recon_view is None:
                r.scores = {"recovered_fraction": 0.0, "psnr_mean": None, "ssim_mean": None}
            else:
                # Unclipped: an exact reconstruction must match to the last digit.
                r.scores = metrics.image_metrics(r.recon_view, r.truth_view, data_range=1.0)
            return
        # Tabular (ADULT): exactness on the encoded rows, accuracy on decoded values.
        r.scores = metrics.feature_metrics(recon, r.truth)
        r.truth_view = ds.decode(r.truth, round_continuous=True)
        if len(recon):
            perm = metrics.match(recon, r.truth)
            r.recon_view = ds.decode(recon[np.maximum(perm, 0)], round_continuous=True)
            r.scores["tabular"] = metrics.tabular_metrics(r.recon_view, r.truth_view)
        r.scores["psnr_mean"] = None


def batch_row(r: BatchResult) -> dict[str, Any]:
    """One CSV row / JSON record per batch."""
    rec, s = r.reconstruction, r.scores
    tab = s.get("tabular") or {}
    return {
        "batch": r.index,
        "complete": rec.complete,
        "certified": rec.certified,
        "recovered_fraction": float(s.get("recovered_fraction", 0.0)),
        "psnr_mean": _num(s.get("psnr_mean")),
        "ssim_mean": _num(s.get("ssim_mean")),
        "rel_err_max": _num(s.get("rel_err_max")),
        "discrete_accuracy": _num(tab.get("discrete_accuracy")),
        "samples": rec.stats.get("samples"),
        "directions_found": rec.stats.get("directions_found"),
        "noise_level": rec.noise_level,
        "backend": rec.stats.get("backend"),
        "seconds": round(r.seconds, 4),
    }


def summarize(config: AttackConfig, rows: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """summary.json: medians over batches, per-batch rows, the exact configuration."""
    def median(key):
        vals = [r[key] for r in rows if r[key] is not None]
        return float(np.median(vals)) if vals else None

    return {
        "batch_size": config.batch_size,
        "batches": len(rows),
        "recovered_fraction": median("recovered_fraction"),
        "psnr_mean": median("psnr_mean"),
        "ssim_mean": median("ssim_mean"),
        "certified_fraction": float(np.mean([bool(r["certified"]) for r in rows])) if rows else 0.0,
        "complete_fraction": float(np.mean([bool(r["complete"]) for r in rows])) if rows else 0.0,
        "seconds_per_batch": median("seconds"),
        "config": asdict(config),
        "per_batch": rows,
        **extra,
    }


def _num(v):
    if v is None:
        return None
    v = float(v)
    return None if np.isnan(v) else v
