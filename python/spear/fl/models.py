"""Reference fully connected networks used as the federated model."""
from __future__ import annotations

import torch
from torch import nn


def make_fcnn(
    input_dim: int,
    num_classes: int,
    *,
    width: int = 200,
    depth: int = 6,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """Build ``Linear, ReLU, Linear, ..., ReLU, Linear`` with ``depth`` linear layers.

    Every linear layer except the last is followed by a ReLU, so layers
    ``0 .. depth-2`` are attackable by SPEAR. Initialisation is PyTorch's default,
    drawn from a private RNG seeded with ``seed``: the same seed gives the same
    weights and the caller's global RNG state is left untouched.
    """
    if depth < 2:
        raise ValueError(f"depth must be >= 2 (at least one Linear followed by a ReLU), got {depth}")
    if input_dim < 1 or num_classes < 1 or width < 1:
        raise ValueError(
            f"input_dim, num_classes and width must be positive, got {input_dim}, {num_classes}, {width}"
        )
    dims = [input_dim] + [width] * (depth - 1) + [num_classes]
    # fork_rng restores the global CPU RNG afterwards, so seeding here has no side effect.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules: list[nn.Module] = []
        for i in range(depth):
            modules.append(nn.Linear(dims[i], dims[i + 1], dtype=dtype))
            if i < depth - 1:
                modules.append(nn.ReLU())
    return nn.Sequential(*modules)
