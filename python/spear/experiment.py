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
from .data import DATASETS, Dataset, load_dataset
from .fl import (PROTOCOLS, ClientConfig, attackable_layer, client_update, feature_extractor, layer_input, layer_payload,
                 linear_layers, make_fcnn, make_vgg)
from .settings import AttackBudget, comma_ints, setting

#: spear: exact recovery (on a CNN: features exactly, then images by feature inversion);
#: inverting-gradients: the optimization baseline of Geiping et al.; hybrid: SPEAR, and
#: when its budget runs out, gradient matching started from the directions it found.
METHODS = ("spear", "inverting-gradients", "hybrid")
MODELS = ("fcnn", "vgg")
#: What ``spear demo`` changes from the defaults (one batch of digits, under a minute).
DEMO = {"dataset": "digits", "batch_size": 12, "batches": 1, "time_limit": 50.0}

# Defaults owned by the client simulation and the baselines, read from them (not repeated).
_CLIENT = ClientConfig()
_IG = IGConfig()


@dataclass
class AttackConfig(AttackBudget):
    """Everything that defines a simulated audit run (written verbatim into summary.json).

    Each field is declared once with its default, choices and help; ``spear attack`` and
    the benchmarks generate their options from it (see :mod:`spear.settings`).
    """

    dataset: str = setting("digits", "dataset the simulated client holds", choices=tuple(DATASETS))
    data_root: str | None = setting(None, "folder with the dataset in its original format")
    batch_size: int = setting(8, "inputs per client batch (b)")
    width: int = setting(200, "neurons per hidden layer (m)")
    depth: int = setting(6, "linear layers in the network")
    layer: int = setting(0, "linear layer to attack (0 = the input layer)")
    protocol: str = setting(_CLIENT.protocol, "what the client sends", choices=PROTOCOLS)
    epochs: int = setting(_CLIENT.epochs, "FedAvg local epochs (E)")
    mini_batch: int | None = setting(_CLIENT.mini_batch, "FedAvg mini-batch size (none: the whole batch)")
    lr: float = setting(_CLIENT.lr, "FedAvg learning rate (eta)")
    dp_clip: float | None = setting(_CLIENT.dp_clip, "DP-SGD per-example clipping norm C (none: no DP)")
    dp_sigma: float = setting(_CLIENT.dp_sigma, "DP-SGD noise multiplier sigma")
    batches: int = setting(1, "number of batches to attack (K)")
    normalize: bool = setting(True, "feed raw pixels in [0,1] (no normalisation)", negate="--raw-pixels")
    image_size: int | None = setting(None, "resize/crop images (ImageNet: 224 or 720)")
    label_homogeneous: bool = setting(False, "draw each batch from a single class")
    method: str = setting("spear", "spear: exact recovery; inverting-gradients: the optimization baseline "
                          "(Geiping et al. 2020); hybrid: SPEAR, then gradient matching from its partial "
                          "result if it runs out of time", choices=METHODS)
    model: str = setting("fcnn", "fcnn: fully connected ReLU network; vgg: small VGG-style CNN (images; "
                         "--width, --depth describe its linear head; SPEAR recovers the head's input "
                         "features, then images)", choices=MODELS)
    channels: tuple[int, ...] = setting((16, 32), "vgg: output channels of its conv blocks (each halves "
                                        "the size)", parse=comma_ints)
    ig_iterations: int = setting(_IG.iterations, "gradient-matching steps (paper: 24000)")
    ig_restarts: int = setting(_IG.restarts, "gradient-matching random restarts")
    ig_lr: float = setting(_IG.lr, "gradient-matching step size", cli=False)
    ig_tv: float = setting(_IG.tv_weight, "total-variation weight of the gradient matching")
    feature_iterations: int = setting(FEATURE_DEFAULTS.iterations, "CNN path: feature-inversion steps")
    feature_tv: float = setting(FEATURE_DEFAULTS.tv_weight,
                                "CNN path: total-variation weight of the feature inversion")
    refine_iterations: int = setting(0, "CNN path: gradient-matching steps started from the feature "
                                     "inversion (0: none)")

    def ig(self, iterations: int | None = None, lr: float | None = None) -> IGConfig:
        return IGConfig(iterations=self.ig_iterations if iterations is None else iterations,
                        lr=self.ig_lr if lr is None else lr,
                        tv_weight=self.ig_tv, restarts=self.ig_restarts, seed=self.seed,
                        device="cuda" if self.device == "cuda" else "auto" if self.device == "auto" else "cpu")

    def client(self, batch: int) -> ClientConfig:
        return ClientConfig(protocol=self.protocol, epochs=self.epochs, mini_batch=self.mini_batch,
                            lr=self.lr, dp_clip=self.dp_clip, dp_sigma=self.dp_sigma,
                            seed=attack_seed(self.seed, batch))


def batch_seed(seed: int, i: int) -> int:
    """Seed that draws the inputs of batch ``i`` of a run seeded ``seed``."""
    return seed * 100_003 + i


def attack_seed(seed: int, i: int) -> int:
    """Seed of batch ``i``'s client (FedAvg shuffle, DP noise) and of the attack's sampler."""
    return seed + i


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

    def __init__(self, config: AttackConfig, dataset: Dataset | None = None, client=None):
        """``dataset``: the loaded ``config.dataset`` when the caller already has it (a
        benchmark running many configurations on one dataset). ``client(model, x, y,
        ClientConfig) -> update``: how the client computes what it sends (default
        :func:`spear.fl.client_update`; e.g. an Opacus DP-SGD client)."""
        self.config = c = config
        self.client = client or client_update
        options = {} if c.image_size is None else {"image_size": c.image_size}
        self.dataset: Dataset = dataset if dataset is not None else load_dataset(
            c.dataset, c.data_root, normalize=c.normalize, **options)
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
        x_np, y_np, _ = ds.sample_batch(c.batch_size, seed=batch_seed(c.seed, i),
                                        label_homogeneous=c.label_homogeneous)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        update = self.client(self.model, x, y, c.client(i))
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
                              seed=attack_seed(c.seed, i), max_samples=c.max_samples, time_limit=c.time_limit,
                              progress=progress, method=c.search)
            result = BatchResult(i, rec, {}, truth, labels=y_np, method=c.method)
            if c.method == "hybrid" and not rec.complete:
                # Budget ran out: gradient matching held to the span and the directions found
                # (same pixel box as the baseline).
                result.inversion = span_inverting_gradients(self.model, update, y, rec, config=c.ig(),
                                                            image_shape=self._image_shape(), bounds=self._bounds(),
                                                            progress=progress)
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
        "verdict": rec.verdict if rec is not None else None,
        "complete": rec.complete if rec is not None else False,
        "certified": rec.certified if rec is not None else None,
        "recovered_fraction": float(s.get("recovered_fraction", 0.0)),
        "psnr_mean": _num(s.get("psnr_mean")),
        "ssim_mean": _num(s.get("ssim_mean")),
        "rel_err_max": _rel_err_max(s),
        "discrete_accuracy": _num(tab.get("discrete_accuracy")),
        "submatrices_sampled": stats.get("samples"),
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
        "diagnosis": rec.diagnosis if rec is not None else None,
    }


#: What the less obvious fields of summary.json and batches.csv mean (written into summary.json).
DEFINITIONS = {
    "recovered_fraction": f"fraction of the batch's inputs whose matched reconstruction has a relative L2 "
                          f"error below {metrics.RECOVERED_REL_ERR:g} (median over batches)",
    "rel_err_max": "largest relative L2 error ||x_hat - x|| / ||x|| over the batch's matched inputs "
                   "(on pixels for images, on the layer's input otherwise)",
    "submatrices_sampled": "random (b-1) x b submatrices of the gradient's factor the sampler evaluated "
                           "(0 when sparse dictionary recovery found every direction)",
    "certified": "exact certificate from the layer's weight and bias: True proves the batch is the "
                 "client's; on the CNN path it certifies the features (the head's input), not the images",
    "violation_rate": "graded certificate: 0 exact, below 0.15 consistent with a noisy update, 0.3+ wrong",
    "noise_level": "s_(b+1) / s_b of the gradient: ~1e-7 for exact float32 gradients, more under noise",
    "device": "where the attack ran: cpu or cuda",
    "verdict": "certified (proof) | consistent (graded check passes: evidence, not proof) | partial "
               "(some inputs lie below the gradient's rounding or noise level; the rest certified or "
               "consistent) | unverified (no weight and bias: nothing checked) | rejected | incomplete",
    "diagnosis": "why the batch is less than certified, with the numbers (budget, noise, rounding, b against m)",
}


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    """Median of ``key`` over the rows that have a value (None when none has)."""
    vals = [r[key] for r in rows if r.get(key) is not None]
    return float(np.median(vals)) if vals else None


def fraction(rows: list[dict[str, Any]], key: str) -> float:
    """Fraction of rows whose ``key`` is true (0 for no rows)."""
    return float(np.mean([bool(r[key]) for r in rows])) if rows else 0.0


def summarize(config: AttackConfig, rows: list[dict[str, Any]], extra: dict[str, Any]) -> dict[str, Any]:
    """summary.json: medians over batches, per-batch rows, the exact configuration."""
    return {
        "batch_size": config.batch_size,
        "batches": len(rows),
        "recovered_fraction": median(rows, "recovered_fraction"),
        "psnr_mean": median(rows, "psnr_mean"),
        "ssim_mean": median(rows, "ssim_mean"),
        "rel_err_max": median(rows, "rel_err_max"),
        "certified_fraction": fraction(rows, "certified"),
        "complete_fraction": fraction(rows, "complete"),
        "seconds_per_batch": median(rows, "seconds"),
        "config": asdict(config),
        "per_batch": rows,
        **extra,
        "definitions": DEFINITIONS,
    }


def _rel_err_max(scores: dict[str, Any]) -> float | None:
    if scores.get("rel_err_max") is not None:
        return _num(scores["rel_err_max"])
    rel = np.asarray(scores.get("rel_err", []), dtype=np.float64)
    rel = rel[np.isfinite(rel)]
    return float(rel.max()) if rel.size else None


def _num(v):
    if v is None:
        return None
    v = float(v)
    return None if np.isnan(v) else v
