"""DP-SGD clients through Opacus's ``PrivacyEngine``: per-sample clipping and Gaussian noise
the way DP-SGD is deployed, with (epsilon, delta) from Opacus's accountant.

The update has the convention of :func:`spear.fl.client_update` (the average of the noisy
step gradients the optimizer applied, so one step is the privatised gradient itself) and can
be attacked the same way. The client's data is the batch ``x`` it is given: Poisson sampling
draws each example with probability ``mini_batch / len(x)`` per step (1 for one full-batch
step), and epsilon is accounted over the steps taken.

What Opacus does not express, and so stays in the hand-written path of
:mod:`spear.fl.client` (``ClientConfig(dp_clip=..., dp_sigma=...)``, used by ``spear attack``
and ``spear demo``): fixed-size (shuffled) mini-batches instead of Poisson sampling (Opacus's
accounting assumes Poisson sampling; with fixed batches it gives no guarantee), noise drawn
on the CPU from a seed so that a run gives the same update on CPU and GPU, and running
without the optional ``opacus`` dependency.
"""
from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..fl.client import ClientConfig
from . import require

DELTA = 1e-5          # the delta epsilon is reported at, unless given (1 / dataset size is the usual rule)
ACCOUNTANT = "rdp"    # Renyi DP: defined for every noise level, including the tiny ones the attack survives


@dataclass(frozen=True)
class OpacusUpdate:
    """What an Opacus DP-SGD client sends, and the privacy its accountant reports."""

    update: dict[str, torch.Tensor]      # per parameter name, shaped like it (gradient scale)
    epsilon: float                       # inf without noise
    delta: float
    steps: int                           # optimizer steps taken
    sample_rate: float                   # Poisson sampling probability per step


def opacus_client_update(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: ClientConfig, *,
                         delta: float = DELTA, accountant: str = ACCOUNTANT) -> OpacusUpdate:
    """Train a copy of ``model`` with Opacus DP-SGD on ``(x, y)``; the update and its epsilon.

    ``config``: ``dp_clip`` is Opacus's ``max_grad_norm``, ``dp_sigma`` its
    ``noise_multiplier``, ``lr``, ``epochs`` and ``mini_batch`` (expected Poisson batch
    size; none: the whole batch) as in :class:`spear.fl.ClientConfig`; ``seed`` seeds the
    sampling and the noise. ``model`` is not modified.
    """
    opacus = require("opacus", "opacus", "an Opacus DP-SGD client")
    if config.dp_clip is None:
        raise ValueError("an Opacus DP-SGD client needs dp_clip (Opacus's max_grad_norm)")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    if x.dim() != 2 or y.dim() != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"need x (batch, features) and y (batch,), got shapes {tuple(x.shape)}, {tuple(y.shape)}")
    local = copy.deepcopy(model).train()
    batch = x.shape[0] if config.mini_batch is None else min(config.mini_batch, x.shape[0])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x.detach(), y.detach()), batch_size=batch)
    optimizer = torch.optim.SGD(local.parameters(), lr=config.lr)
    with warnings.catch_warnings():
        # "Secure RNG turned off": deliberate, the noise is seeded so that an audit can be rerun.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = opacus.PrivacyEngine(accountant=accountant)
    sampling = torch.Generator().manual_seed(config.seed)
    noise = torch.Generator(device=x.device).manual_seed(config.seed + 1)
    dp_model, dp_optimizer, dp_loader = engine.make_private(
        module=local, optimizer=optimizer, data_loader=loader, noise_multiplier=config.dp_sigma,
        max_grad_norm=config.dp_clip, poisson_sampling=True, noise_generator=noise)
    dp_loader.batch_sampler.generator = sampling      # Opacus seeds sampling only in its secure mode
    params = dict(local.named_parameters())
    applied = {n: torch.zeros_like(p) for n, p in params.items()}
    steps = 0
    for _ in range(config.epochs):
        for xb, yb in dp_loader:
            dp_optimizer.zero_grad()
            if len(xb):
                F.cross_entropy(dp_model(xb), yb).backward()
            dp_optimizer.step()      # p.grad is now the clipped, noised, averaged gradient it applied
            steps += 1
            for n, p in params.items():
                if p.grad is not None:
                    applied[n] += p.grad.detach()
    epsilon = math.inf if config.dp_sigma == 0 else float(engine.get_epsilon(delta))
    return OpacusUpdate(update={n: v / max(steps, 1) for n, v in applied.items()}, epsilon=epsilon, delta=delta,
                        steps=steps, sample_rate=float(dp_loader.sample_rate))
