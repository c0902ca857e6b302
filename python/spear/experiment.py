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
from .baselines import (FEATURE_DEFAULTS, IGConfig, InversionResult, feature_inversion, infer_labels,
                        inverting_gradients, span_inverting_gradients)
from .data import Dataset, load_dataset
from .fl import (ClientConfig, attackable_layer, client_update, feature_extractor, layer_input, layer_payload,
                 linear_layers, make_fcnn, make_vgg)

#: spear: exact recovery (on a CNN: features exactly, then images by feature inversion);
#: inverting-gradients: the optimization baseline of Geiping et al.; hybrid: SPEAR, and
#: when its budget runs out, gradient matching started from the directions it found.
METHODS = ("spear", "inverting-gradients", "hybrid")
MODELS = ("fcnn", "vgg")


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
    search: str = "auto"               # SPEAR's direction source: "auto", "sample" or "dictionary"
    method: str = "spear"              # see METHODS
    model: str = "fcnn"                # "vgg": small VGG-style CNN; depth/width are its head's
    channels: tuple[int, ...] = (16, 32)
    ig_iterations: int = 2000          # Inverting Gradients (also the hybrid's optimization)
    ig_restarts: int = 1
    ig_lr: float = 0.1
    ig_tv: float = 1e-4
    feature_iterations: int = 1000     # CNN path: feature inversion steps
    feature_tv: float = 1e-2           # CNN path: TV weight of the feature inversion
    refine_iterations: int = 0         # CNN path: gradient-matching steps after feature inversion

    def ig(self, iterations: int | None = None, lr: float | None = None) -> IGConfig:
        return IGConfig(iterations=self.ig_iterations if iterations is None else iterations,
                        lr=self.ig_lr if lr is None else lr,
                        tv_weight=self.ig_tv, restarts=self.ig_restarts, seed=self.seed,
                        device="cuda" if self.device == "cuda" else "auto" if self.device == "auto" else "cpu")

    def client(self, batch: int) -> ClientConfig:
        return ClientConfig(protocol=self.protocol, epochs=self.epochs, mini_batch=self.mini_batch,
                            lr=self.lr, dp_clip=self.dp_clip, dp_sigma=self.dp_sigma,
                            seed=self.seed + batch)


@dataclass
class BatchResult:
    index: int
    reconstruction: Reconstruction | None
    scores: dict[str, Any]
    truth: np.ndarray                  # what the attacked layer saw (b x n)
    truth_view: Any = None             # pixels (k,C,H,W) or decoded table, for reports
    recon_view: Any = None
    seconds: float = 0.0
    labels: np.ndarray = field(default_factory=lambda: np.empty(0))
    inversion: InversionResult | None = None       # the optimization's result, when one ran
    method: str = "spear"


class Experiment:
    """Dataset, model and attack settings of one run; ``run_batch(i)`` attacks batch i."""

    def __init__(self, config: AttackConfig):
        self.config = c = config
        options = {} if c.image_size is None else {"image_size": c.image_size}
        self.dataset: Dataset = load_dataset(c.dataset, c.data_root, normalize=c.normalize, **options)
        if c.batch_size < 1 or c.batch_size > len(self.dataset):
            raise ValueError(f"batch size {c.batch_size} is not possible with {len(self.dataset)} samples")
        if c.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {c.method!r}")
        if c.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {c.model!r}")
        self.model = self._build_model()
        n_layers = c.depth - 1       # the last linear layer has no ReLU after it
        if not 0 <= c.layer < n_layers:
            raise ValueError(f"layer {c.layer} cannot be attacked: a depth-{c.depth} network has "
                             f"attackable layers 0..{n_layers - 1} (each followed by a ReLU)")
        if c.method == "hybrid" and (c.model != "fcnn" or c.layer != 0):
            raise ValueError("method 'hybrid' works on the first layer of the fcnn model (layer 0)")
        attackable_layer(self.model, c.layer)
        fan_in = linear_layers(self.model)[c.layer].in_features
        if c.batch_size > min(c.width, fan_in):
            raise ValueError(f"batch size {c.batch_size} exceeds what layer {c.layer} can reveal: "
                             f"its gradient is {c.width} x {fan_in}, so b <= {min(c.width, fan_in)}")

    def _build_model(self) -> torch.nn.Sequential:
        c, ds = self.config, self.dataset
        if c.model == "fcnn":
            return make_fcnn(ds.input_dim, ds.num_classes, width=c.width, depth=c.depth, seed=c.seed)
        shape = ds.sample_shape
        if ds.kind != "image" or len(shape) != 3 or shape[1] != shape[2]:
            raise ValueError(f"model 'vgg' needs square images, {ds.name} has samples of shape {shape}")
        return make_vgg(shape[0], shape[1], ds.num_classes, channels=tuple(c.channels), head_width=c.width,
                        head_depth=c.depth, seed=c.seed)

    def run_batch(self, i: int, *, progress: bool = False) -> BatchResult:
        c, ds = self.config, self.dataset
        x_np, y_np, _ = ds.sample_batch(c.batch_size, seed=c.seed * 100_003 + i,
                                        label_homogeneous=c.label_homogeneous)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        update = client_update(self.model, x, y, c.client(i))
        t0 = time.perf_counter()
        if c.method == "inverting-gradients":
            inv = inverting_gradients(self.model, update, y, (ds.input_dim,), config=c.ig(),
                                      image_shape=self._image_shape(), bounds=self._bounds(), progress=progress)
            result = BatchResult(i, None, {}, x_np.astype(np.float64), labels=y_np, inversion=inv,
                                 method=c.method)
        else:
            payload = layer_payload(self.model, update, c.layer)
            truth = layer_input(self.model, x, c.layer).detach().double().numpy()
            rec = reconstruct(payload.grad_weight, payload.grad_bias, c.batch_size,
                              weight=payload.weight, bias=payload.bias, device=c.device,
                              seed=c.seed + i, max_samples=c.max_samples, time_limit=c.time_limit,
                              progress=progress, method=c.search)
            result = BatchResult(i, rec, {}, truth, labels=y_np, method=c.method)
            if c.method == "hybrid" and not rec.complete:
                # Budget ran out: optimize from the directions found, inside the gradient's span.
                result.inversion = span_inverting_gradients(self.model, update, y, rec.directions, config=c.ig(),
                                                            image_shape=self._image_shape(), progress=progress)
            elif c.model == "vgg" and c.layer == 0 and rec.complete:
                result.inversion = self._invert_features(rec, payload, update, y, progress)
        result.seconds = time.perf_counter() - t0
        self._score(result, x_np)
        return result

    def _image_shape(self):
        return self.dataset.sample_shape if self.dataset.kind == "image" else None

    def _bounds(self):
        """The valid pixel box [0, 1] in model-input units (None for tables)."""
        ds = self.dataset
        if ds.kind != "image":
            return None
        C = ds.sample_shape[0]
        mean = ds.mean if ds.normalized else np.zeros(C)
        std = ds.std if ds.normalized else np.ones(C)
        per_pixel = np.ones(ds.sample_shape[1:])
        lo = ((0.0 - mean)[:, None, None] / std[:, None, None] * per_pixel).reshape(-1)
        hi = ((1.0 - mean)[:, None, None] / std[:, None, None] * per_pixel).reshape(-1)
        return lo, hi

    def _invert_features(self, rec: Reconstruction, payload, update, y, progress: bool) -> InversionResult:
        """CNN path: labels from the gradient, images from the features, optional refinement."""
        c, ds = self.config, self.dataset
        head_at = next(k for k, m in enumerate(self.model) if isinstance(m, torch.nn.Linear))
        labels, _ = infer_labels(self.model[head_at], self.model[head_at + 1:], rec.inputs,
                                 payload.grad_weight, ds.num_classes)
        fcfg = IGConfig(iterations=c.feature_iterations, lr=FEATURE_DEFAULTS.lr, tv_weight=c.feature_tv,
                        signed=False, seed=c.seed, device=c.ig().device)
        inv = feature_inversion(feature_extractor(self.model, c.layer), rec.inputs, (ds.input_dim,), config=fcfg,
                                image_shape=self._image_shape(), bounds=self._bounds(), progress=progress)
        inv.stats["labels"] = labels
        inv.stats["feature_inversion_loss"] = inv.loss
        if c.refine_iterations > 0:
            refined = inverting_gradients(self.model, update, labels, (ds.input_dim,),
                                          # It starts close: a tenth of the step size.
                                          config=c.ig(c.refine_iterations, c.ig_lr / 10),
                                          image_shape=self._image_shape(),
                                          bounds=self._bounds(), init=inv.inputs.astype(np.float32),
                                          progress=progress)
            refined.stats.update(inv.stats, refined_from_loss=inv.loss, seconds_feature_inversion=inv.seconds,
                                 feature_rel_err_before_refine=inv.stats["feature_rel_err"],
                                 inputs_before_refine=inv.inputs)
            phi = feature_extractor(self.model, c.layer)
            with torch.no_grad():
                f = phi(torch.as_tensor(refined.inputs, dtype=torch.float32)).double().numpy()
            refined.stats["feature_rel_err"] = float(np.linalg.norm(f - rec.inputs) / np.linalg.norm(rec.inputs))
            inv = refined
        return inv

    def _score(self, r: BatchResult, x_np: np.ndarray) -> None:
        ds, rec = self.dataset, r.reconstruction
        if r.inversion is not None and (rec is None or self.config.model == "vgg" or not rec.complete):
            self._score_inversion(r, x_np)
            return
        recon = rec.inputs if rec.inputs is not None else np.empty((0, r.truth.shape[1]))
        if self.config.model == "vgg" and self.config.layer == 0:
            # SPEAR did not finish on the CNN: no features, hence no images.
            fm = metrics.feature_metrics(recon, r.truth)
            r.truth = x_np.astype(np.float64)
            r.truth_view = ds.to_pixels(r.truth)
            r.scores = {"recovered_fraction": 0.0, "psnr_mean": None, "ssim_mean": None,
                        "feature_recovered_fraction": fm["recovered_fraction"]}
            return
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

    def _score_inversion(self, r: BatchResult, x_np: np.ndarray) -> None:
        """An optimization's result against the client's batch (pixels clipped to [0, 1])."""
        ds, rec, inputs = self.dataset, r.reconstruction, r.inversion.inputs
        feature_scores = {}
        if rec is not None and self.config.model == "vgg":   # the features SPEAR recovered
            fm = metrics.feature_metrics(rec.inputs, r.truth)
            feature_scores = {"feature_recovered_fraction": fm["recovered_fraction"],
                              "feature_rel_err_max": fm["rel_err_max"], "feature_cosine_mean": fm["cosine_mean"]}
            r.truth = x_np.astype(np.float64)
        if ds.kind != "image":
            r.scores = {**metrics.feature_metrics(inputs, x_np.astype(np.float64)), "psnr_mean": None}
        else:
            r.truth_view = ds.to_pixels(x_np.astype(np.float64))
            r.recon_view = np.clip(ds.to_pixels(inputs), 0.0, 1.0)
            r.scores = metrics.image_metrics(r.recon_view, r.truth_view, data_range=1.0)
            before = r.inversion.stats.get("inputs_before_refine")
            if before is not None:     # CNN path: the feature inversion alone, for comparison
                m = metrics.image_metrics(np.clip(ds.to_pixels(before), 0.0, 1.0), r.truth_view, data_range=1.0)
                feature_scores.update(psnr_before_refine=m["psnr_mean"], ssim_before_refine=m["ssim_mean"])
        r.scores.update(feature_scores)


def batch_row(r: BatchResult) -> dict[str, Any]:
    """One CSV row / JSON record per batch."""
    rec, s, inv = r.reconstruction, r.scores, r.inversion
    tab = s.get("tabular") or {}
    stats = rec.stats if rec is not None else {}
    return {
        "batch": r.index,
        "method": r.method,
        "complete": rec.complete if rec is not None else False,
        "certified": rec.certified if rec is not None else None,
        "recovered_fraction": float(s.get("recovered_fraction", 0.0)),
        "psnr_mean": _num(s.get("psnr_mean")),
        "ssim_mean": _num(s.get("ssim_mean")),
        "rel_err_max": _num(s.get("rel_err_max")),
        "discrete_accuracy": _num(tab.get("discrete_accuracy")),
        "samples": stats.get("samples"),
        "directions_found": stats.get("directions_found"),
        "noise_level": rec.noise_level if rec is not None else None,
        # Graded certificate: 0 exact, < 0.15 consistent (noisy updates), ~0.3+ wrong.
        "violation_rate": (rec.certificate.violation_rate
                           if rec is not None and rec.certificate is not None else None),
        "backend": stats.get("backend", inv.stats.get("device") if inv is not None else None),
        "optimization_loss": inv.loss if inv is not None else None,
        "feature_recovered_fraction": _num(s.get("feature_recovered_fraction")),
        "feature_rel_err_max": _num(s.get("feature_rel_err_max")),
        # How well the images found reproduce the recovered features (CNN path).
        "feature_inversion_rel_err": _num(inv.stats.get("feature_rel_err")) if inv is not None else None,
        "psnr_before_refine": _num(s.get("psnr_before_refine")),
        "ssim_before_refine": _num(s.get("ssim_before_refine")),
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
