"""An honest federated client: what it computes and sends to the server.

Two protocols are simulated on a batch ``(x, y)`` with cross-entropy loss:

* **FedSGD**: the client sends the gradient of the *mean* loss at the server's weights.
* **FedAvg**: the client trains a copy of the model for ``epochs`` local epochs of
  plain SGD (mini-batches shuffled with a seeded RNG) and sends the weight change
  divided by ``lr * number_of_steps``. That rescaling gives the update the scale of a
  gradient (it is exactly the average of the step gradients), so the same attack
  code applies to both protocols; for ``epochs=1`` and a single full batch it equals
  the FedSGD gradient.

Optionally each gradient is privatised with DP-SGD: per-example gradients are clipped
to total L2 norm ``dp_clip``, summed, Gaussian noise of std ``dp_sigma * dp_clip`` is
added, and the sum is divided by the (mini-)batch size.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

PROTOCOLS = ("fedsgd", "fedavg")


@dataclass(frozen=True)
class ClientConfig:
    """How the client turns its batch into an update.

    ``mini_batch=None`` means the whole batch in one step. ``epochs``, ``mini_batch``
    and ``lr`` only matter for FedAvg. ``dp_clip=None`` disables DP-SGD. ``seed``
    drives both the FedAvg shuffling and the DP noise (independent streams).
    """

    protocol: str = "fedsgd"
    epochs: int = 1
    mini_batch: int | None = None
    lr: float = 0.01
    dp_clip: float | None = None
    dp_sigma: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.mini_batch is not None and self.mini_batch < 1:
            raise ValueError(f"mini_batch must be >= 1 or None, got {self.mini_batch}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.dp_clip is not None and not self.dp_clip > 0:
            raise ValueError(f"dp_clip must be > 0 or None, got {self.dp_clip}")
        if self.dp_sigma < 0:
            raise ValueError(f"dp_sigma must be >= 0, got {self.dp_sigma}")
        if self.dp_sigma > 0 and self.dp_clip is None:
            raise ValueError("dp_sigma > 0 requires dp_clip (noise is scaled by the clip norm)")


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Independent shuffle and noise RNGs, so enabling DP does not change the shuffle."""
    shuffle_seed, noise_seed = (int(s.generate_state(1, np.uint64)[0]) for s in np.random.SeedSequence(seed).spawn(2))
    return torch.Generator().manual_seed(shuffle_seed), torch.Generator().manual_seed(noise_seed)


def minibatch_schedule(batch_size: int, config: ClientConfig) -> list[torch.Tensor]:
    """Index sets of the FedAvg local SGD steps, in order, over all epochs.

    Each epoch reshuffles (seeded) and splits into chunks of ``mini_batch``; the last
    chunk may be smaller. A single full-batch step per epoch is not shuffled.
    """
    shuffle_gen, _ = _generators(config.seed)
    size = batch_size if config.mini_batch is None else min(config.mini_batch, batch_size)
    steps: list[torch.Tensor] = []
    for _ in range(config.epochs):
        if size >= batch_size:
            steps.append(torch.arange(batch_size))
            continue
        order = torch.randperm(batch_size, generator=shuffle_gen)
        steps.extend(order.split(size))
    return steps


def _validate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError("x and y must be torch tensors")
    if x.dim() != 2:
        raise ValueError(f"x must be (batch, features), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"x must be floating point, got {x.dtype}")
    if y.dim() != 1 or y.dtype != torch.int64:
        raise ValueError(f"y must be a 1-D int64 label tensor, got shape {tuple(y.shape)} dtype {y.dtype}")
    if y.shape[0] != x.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y need the same non-zero batch size, got {x.shape[0]} and {y.shape[0]}")
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is not None and param.dtype != x.dtype:
        raise ValueError(f"x dtype {x.dtype} does not match the model dtype {param.dtype}")
    with torch.no_grad():
        num_classes = model(x[:1]).shape[-1]
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got range {int(y.min())}..{int(y.max())}")


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _mean_loss_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    params = _trainable(model)
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {n: (torch.zeros_like(p) if g is None else g.detach()) for (n, p), g in zip(params.items(), grads)}


def _per_example_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradients of each example's loss, stacked along a new leading batch axis."""
    trainable = {n: p.detach() for n, p in _trainable(model).items()}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in trainable}
    frozen.update(dict(model.named_buffers()))

    def example_loss(params: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, {**params, **frozen}, (xi.unsqueeze(0),))
        return F.cross_entropy(logits, yi.unsqueeze(0))

    return vmap(grad(example_loss), in_dims=(None, 0, 0))(trainable, x, y)


def _dp_grad(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float, sigma: float, noise_gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """DP-SGD: clip each example's full gradient to norm ``clip``, sum, add noise, average."""
    per_example = _per_example_grads(model, x, y)
    sq_norms = sum(g.flatten(1).pow(2).sum(1) for g in per_example.values())
    # The tiny epsilon keeps the clipped norm strictly <= clip and avoids 0/0.
    scale = (clip / (sq_norms.sqrt() + 1e-12)).clamp(max=1.0)
    out: dict[str, torch.Tensor] = {}
    for name, g in per_example.items():
        total = (g * scale.view(-1, *[1] * (g.dim() - 1))).sum(0)
        if sigma > 0:
            # Drawn on the CPU generator, then moved, so results do not depend on the device.
            noise = torch.randn(total.shape, generator=noise_gen, dtype=total.dtype).to(total.device)
            total = total + sigma * clip * noise
        out[name] = total / x.shape[0]
    for name, p in model.named_parameters():
        out.setdefault(name, torch.zeros_like(p))
    return out


def _step_grad(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: ClientConfig, noise_gen: torch.Generator
) -> dict[str, torch.Tensor]:
    if config.dp_clip is None:
        grads = _mean_loss_grad(model, x, y)
        for name, p in model.named_parameters():
            grads.setdefault(name, torch.zeros_like(p))
        return grads
    return _dp_grad(model, x, y, config.dp_clip, config.dp_sigma, noise_gen)


def client_update(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: ClientConfig | None = None
) -> dict[str, torch.Tensor]:
    """What the client sends for every named parameter of ``model``, shaped like it.

    ``x`` is ``(b, n)`` with the model's float dtype, ``y`` is ``(b,)`` int64. ``model``
    is never modified (FedAvg trains a deep copy) and its ``.grad`` fields are not
    touched. Frozen parameters get a zero update. See the module docstring for the
    protocols.
    """
    config = config or ClientConfig()
    _validate(model, x, y)
    x, y = x.detach(), y.detach()
    _, noise_gen = _generators(config.seed)
    if config.protocol == "fedsgd":
        return _step_grad(model, x, y, config, noise_gen)

    local = copy.deepcopy(model)
    params = dict(local.named_parameters())
    # Summing the applied step gradients equals (w_before - w_after) / lr exactly in
    # real arithmetic, without the cancellation error of subtracting nearby weights.
    applied = {n: torch.zeros_like(p) for n, p in params.items()}
    steps = minibatch_schedule(x.shape[0], config)
    for idx in steps:
        grads = _step_grad(local, x[idx], y[idx], config, noise_gen)
        with torch.no_grad():
            for name, p in params.items():
                if p.requires_grad:
                    p.sub_(config.lr * grads[name])
                    applied[name] += grads[name]
    return {name: total / len(steps) for name, total in applied.items()}
