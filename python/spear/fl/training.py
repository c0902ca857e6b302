"""Train the federated model before attacking it: auditors meet trained networks.

Plain SGD with momentum on (x, y) arrays, the way a federated model is trained between
the rounds an auditor captures. ``checkpoints`` (in optimizer steps) hands out the model
as it was at those steps, so one run yields init, a tenth of an epoch, an epoch, ...
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """SGD settings (defaults: the trained MNIST MLP of the trained-networks measurements)."""

    epochs: float = 3.0          # passes over the training set (fractions allowed)
    lr: float = 0.05
    momentum: float = 0.9
    batch_size: int = 64
    seed: int = 0

    def steps_for(self, n_train: int) -> int:
        return max(0, int(round(self.epochs * n_train / self.batch_size)))


def train_classifier(model: nn.Module, x, y, config: TrainConfig = TrainConfig(), *,
                     checkpoints: Iterable[int] = (),
                     on_checkpoint: Callable[[int, nn.Module], None] | None = None) -> list[float]:
    """Train ``model`` in place with cross-entropy; returns the loss of every step.

    checkpoints: optimizer steps (0 = before training) at which ``on_checkpoint(step,
    model)`` is called. Afterwards the parameters' ``.grad`` are cleared, so a gradient
    computed on the trained model never accumulates onto the last training step.
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long()
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x and y must hold the same positive number of samples, got "
                         f"{x.shape[0]} and {y.shape[0]}")
    dtype = next(model.parameters()).dtype
    x = x.to(dtype)
    marks = sorted(set(int(c) for c in checkpoints))
    if marks and marks[0] < 0:
        raise ValueError(f"checkpoints are step counts >= 0, got {marks[0]}")
    total = config.steps_for(len(x))
    if marks and marks[-1] > total:
        raise ValueError(f"checkpoint at step {marks[-1]} is past the end of training ({total} steps)")
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    gen = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    order = torch.randperm(len(x), generator=gen)
    at = 0
    for step in range(total + 1):
        while marks and marks[0] == step:
            if on_checkpoint is not None:
                on_checkpoint(step, model)
            marks.pop(0)
        if step == total:
            break
        if at + config.batch_size > len(x):
            order, at = torch.randperm(len(x), generator=gen), 0
        idx = order[at:at + config.batch_size]
        at += config.batch_size
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    opt.zero_grad(set_to_none=True)
    return losses
