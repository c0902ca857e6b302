"""Optimization-based gradient inversion: "Inverting Gradients" (Geiping et al., NeurIPS 2020).

The attacker knows the model (the server sent it), the client's update for every
parameter and the batch's labels. It optimizes dummy inputs ``x`` so that the gradient
they produce points the same way as the observed one:

    loss(x) = 1 - <g(x), g*> / (||g(x)|| ||g*||)  +  tv_weight * TV(x)

where ``g`` concatenates the gradients of the mean cross-entropy over *all* parameters
and TV is the anisotropic total variation (mean |dx| + mean |dy|) of each image. As in
the reference implementation: Adam with step size 0.1, signed gradients, a step schedule
dividing the step by 10 at 3/8, 5/8 and 7/8 of the iterations, inputs clamped to the
valid pixel box after every step, several restarts from Gaussian noise, the restart with
the lowest final loss kept (and within a restart the iterate with the lowest loss). The reference runs 24,000 iterations on ImageNet; the
default here is smaller so that CPU runs finish (see :class:`IGConfig`).

Usable on any ``nn.Module`` whose forward takes a batch ``(b, *input_shape)`` and returns
logits; runs on the GPU when one is present (``device="auto"``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class IGConfig:
    """Settings of the optimization (defaults follow Geiping et al. except ``iterations``).

    iterations: Adam steps per restart (the paper: 24,000 on ImageNet).
    lr: Adam step size; with ``signed`` gradients it is close to a per-pixel step.
    tv_weight: weight of the total-variation prior. The reference ImageNet setting (0.1,
        for trained ResNets) over-smooths on the random networks here: on TinyImageNet,
        b = 8, a 6-layer FCNN, 300 iterations, 0.1 / 0.01 / 1e-4 gave 20.3 / 27.2 /
        27.7 dB, so the default is 1e-4 (the value used for CIFAR-sized inputs).
    restarts: independent random starts; the one with the lowest final loss is kept.
    signed: replace the gradient by its sign before the Adam step.
    lr_decay: divide the step by 10 at 3/8, 5/8 and 7/8 of the iterations.
    seed: seed of the random starts.
    device: "auto" (CUDA when available), "cpu" or "cuda".
    history_every: record the loss every this many iterations.
    """

    iterations: int = 2000
    lr: float = 0.1
    tv_weight: float = 1e-4
    restarts: int = 1
    signed: bool = True
    lr_decay: bool = True
    seed: int = 0
    device: str = "auto"
    history_every: int = 10

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not self.tv_weight >= 0:
            raise ValueError(f"tv_weight must be >= 0, got {self.tv_weight}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.history_every < 1:
            raise ValueError(f"history_every must be >= 1, got {self.history_every}")


@dataclass
class InversionResult:
    """Outcome of an optimization-based reconstruction.

    inputs: (b, *input_shape) float64 numpy array, row i paired with labels[i].
    loss: final loss of the kept restart (objective incl. prior).
    loss_history: the kept restart's loss every ``history_every`` iterations.
    restart_losses: final loss of every restart.
    seconds: wall time of the whole optimization.
    """

    inputs: np.ndarray
    loss: float
    loss_history: list[float]
    restart_losses: list[float]
    seconds: float
    iterations: int
    stats: dict = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' requested but torch sees no CUDA device")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def total_variation(x: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels, down plus across, per batch."""
    img = x.reshape(x.shape[0], *image_shape)
    dy = (img[..., 1:, :] - img[..., :-1, :]).abs().mean()
    dx = (img[..., :, 1:] - img[..., :, :-1]).abs().mean()
    return dx + dy


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def check_target_gradients(model: nn.Module, target: Mapping[str, torch.Tensor] | Sequence[torch.Tensor]
                           ) -> dict[str, torch.Tensor]:
    """The observed gradients keyed like ``model.named_parameters()``, validated."""
    params = trainable_parameters(model)
    if not isinstance(target, Mapping):
        target = list(target)
        if len(target) != len(params):
            raise ValueError(f"got {len(target)} gradients for {len(params)} trainable parameters")
        target = dict(zip(params, target))
    missing = [n for n in params if n not in target]
    if missing:
        raise ValueError(f"no gradient given for parameters {missing}")
    out = {}
    for name, p in params.items():
        g = torch.as_tensor(target[name])
        if tuple(g.shape) != tuple(p.shape):
            raise ValueError(f"gradient of {name!r} has shape {tuple(g.shape)}, the parameter {tuple(p.shape)}")
        if not torch.isfinite(g).all():
            raise ValueError(f"gradient of {name!r} contains NaN or Inf")
        out[name] = g.detach()
    if all(float(g.abs().max()) == 0 for g in out.values()):
        raise ValueError("all gradients are zero: there is nothing to match")
    return out


def check_labels(labels, batch_size: int | None, num_classes: int) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer array, got shape {tuple(y.shape)} dtype {y.dtype}")
    if batch_size is not None and len(y) != batch_size:
        raise ValueError(f"{len(y)} labels for a batch of {batch_size}")
    if len(y) == 0:
        raise ValueError("labels are empty: the batch size must be at least 1")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got range {int(y.min())}..{int(y.max())}")
    return y.long()


class GradientMatching:
    """The cosine gradient-matching objective of one observed update (plus TV prior)."""

    def __init__(self, model: nn.Module, target: dict[str, torch.Tensor], labels: torch.Tensor,
                 *, tv_weight: float = 0.0, image_shape: Sequence[int] | None = None):
        self.model = model
        self.params = list(trainable_parameters(model).values())
        self.target = [target[n].to(p.device, p.dtype) for n, p in trainable_parameters(model).items()]
        self.target_norm = torch.sqrt(sum((t * t).sum() for t in self.target))
        self.labels = labels
        self.tv_weight = tv_weight
        self.image_shape = image_shape

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(self.model(x), self.labels)
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        dot = sq = 0.0
        for g, t in zip(grads, self.target):
            if g is None:
                continue
            dot = dot + (g * t).sum()
            sq = sq + (g * g).sum()
        cost = 1.0 - dot / (torch.sqrt(sq) * self.target_norm + 1e-30)
        if self.tv_weight > 0 and self.image_shape is not None:
            cost = cost + self.tv_weight * total_variation(x, self.image_shape)
        return cost


def optimize(objective: Callable[[torch.Tensor], torch.Tensor], to_inputs: Callable[[torch.Tensor], torch.Tensor],
             start: torch.Tensor, config: IGConfig, *, project: Callable[[torch.Tensor], None] | None = None,
             progress: bool = False, desc: str = "inverting",
             callback: Callable[[int, torch.Tensor], None] | None = None, callback_every: int = 0,
             lr_scale: float = 1.0) -> tuple[torch.Tensor, float, list[float]]:
    """Adam (optionally signed, step schedule) on ``theta`` minimising objective(to_inputs(theta)).

    ``project`` is applied in place after each step (the pixel box); ``callback(it, theta)``
    runs every ``callback_every`` iterations before the step (e.g. to re-pair labels);
    ``lr_scale`` multiplies the step size (for parameterizations not in pixel units).
    Returns the inputs
    with the lowest loss seen (the last iterate unless a step made things worse: a
    large step can kill every ReLU of a small network and freeze the optimization), that
    loss and the loss history.
    """
    theta = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=config.lr * lr_scale)
    n = config.iterations
    milestones = [int(n * f) for f in (3 / 8, 5 / 8, 7 / 8)] if config.lr_decay else []
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    history: list[float] = []
    best_loss, best_theta = float("inf"), theta.detach().clone()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc=desc, unit="it", leave=False)
    try:
        for it in range(n):
            if callback is not None and callback_every and it % callback_every == 0:
                with torch.no_grad():
                    callback(it, theta.detach())
                if it:      # the objective changed: the best iterate so far is stale
                    best_loss = float("inf")
            opt.zero_grad(set_to_none=True)
            loss = objective(to_inputs(theta))
            (g,) = torch.autograd.grad(loss, [theta])
            value = float(loss.detach())
            if value < best_loss:      # the loss is evaluated anyway: keep the best iterate
                best_loss, best_theta = value, theta.detach().clone()
            theta.grad = g.sign() if config.signed else g
            opt.step()
            sched.step()
            if project is not None:
                with torch.no_grad():
                    project(theta)
            if it % config.history_every == 0:
                history.append(value)
                if bar is not None:
                    bar.set_postfix(loss=f"{history[-1]:.4f}")
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    with torch.no_grad():
        x = to_inputs(theta).detach()
    final = float(objective(x).detach())
    history.append(final)
    if best_loss < final:
        with torch.no_grad():
            x = to_inputs(best_theta).detach()
        final = best_loss
    return x, final, history


def best_of_restarts(objective, shape, init, config: IGConfig, project, device, dtype,
                     progress: bool, desc: str):
    """Run :func:`optimize` from ``config.restarts`` starts (``init``, else seeded Gaussian
    noise) and keep the lowest loss. Returns (inputs, loss, history, every restart's loss)."""
    gen = torch.Generator().manual_seed(config.seed)
    best, losses = None, []
    for r in range(config.restarts):
        start = init if init is not None else torch.randn(shape, generator=gen, dtype=dtype).to(device)
        if project is not None:
            start = start.clone()
            project(start)
        x, loss, history = optimize(objective, lambda t: t, start, config, project=project,
                                    progress=progress, desc=f"{desc} (restart {r + 1})")
        losses.append(loss)
        if best is None or loss < best[1]:
            best = (x, loss, history)
    return (*best, losses)


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on ``device`` (a copy when it has to move), so the caller's stays put."""
    first = next(model.parameters(), None)
    if first is None:
        raise ValueError("model has no parameters: there is no gradient to invert")
    return model if first.device == device else copy.deepcopy(model).to(device)


def _bounds(bounds, shape, device, dtype):
    if bounds is None:
        return None
    lo, hi = (torch.as_tensor(np.asarray(v), dtype=dtype, device=device) for v in bounds)
    lo, hi = torch.broadcast_to(lo, shape).clone(), torch.broadcast_to(hi, shape).clone()
    if (lo > hi).any():
        raise ValueError("bounds: the lower bound exceeds the upper bound somewhere")
    return lo, hi


def inverting_gradients(
    model: nn.Module,
    target_gradients: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    labels,
    input_shape: Sequence[int],
    *,
    config: IGConfig | None = None,
    image_shape: Sequence[int] | None = None,
    bounds: tuple | None = None,
    init: torch.Tensor | np.ndarray | None = None,
    progress: bool = False,
) -> InversionResult:
    """Reconstruct a batch by gradient matching (Geiping et al. 2020), labels known.

    model: the server's model; not modified (moved copies are made when needed).
    target_gradients: the client's update for every trainable parameter, as a dict keyed
        like ``model.named_parameters()`` (what ``spear.fl.client_update`` returns) or a
        sequence in that order; the update must be a gradient of the *mean* cross-entropy.
    labels: (b,) integer labels; row i of the result is paired with labels[i].
    input_shape: shape of one model input (e.g. ``(n,)`` for flattened images).
    image_shape: (C, H, W) view of one input for the total-variation prior (None: no TV).
    bounds: (low, high) arrays broadcastable to (b, *input_shape): the valid pixel box in
        model-input units; inputs are clamped to it after every step (None: no box).
    init: a starting batch instead of Gaussian noise (used by every restart).
    """
    config = config or IGConfig()
    t0 = time.perf_counter()
    device = resolve_device(config.device)
    work = prepare_model(model, device)
    target = check_target_gradients(work, target_gradients)
    dtype = next(work.parameters()).dtype
    input_shape = tuple(int(s) for s in input_shape)
    if image_shape is not None and int(np.prod(image_shape)) != int(np.prod(input_shape)):
        raise ValueError(f"image_shape {tuple(image_shape)} does not hold an input of shape {input_shape}")
    with torch.no_grad():
        num_classes = work(torch.zeros((1, *input_shape), dtype=dtype, device=device)).shape[-1]
    y = check_labels(labels, None, num_classes).to(device)
    b = len(y)
    shape = (b, *input_shape)
    if init is not None:
        init = torch.as_tensor(np.asarray(init) if not isinstance(init, torch.Tensor) else init)
        if tuple(init.shape) != shape:
            raise ValueError(f"init has shape {tuple(init.shape)}, expected {shape}")
        if not torch.isfinite(init).all():
            raise ValueError("init contains NaN or Inf")
        init = init.to(device, dtype)
    box = _bounds(bounds, shape, device, dtype)
    objective = GradientMatching(work, target, y, tv_weight=config.tv_weight, image_shape=image_shape)
    project = None if box is None else (lambda t: t.copy_(torch.maximum(torch.minimum(t, box[1]), box[0])))

    x, loss, history, losses = best_of_restarts(objective, shape, init, config, project, device,
                                                dtype, progress, "inverting gradients")
    return InversionResult(inputs=x.detach().cpu().double().numpy(), loss=loss, loss_history=history,
                           restart_losses=losses, seconds=time.perf_counter() - t0,
                           iterations=config.iterations, stats={"device": str(device)})
