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


def make_vgg(
    in_channels: int,
    image_size: int,
    num_classes: int,
    *,
    channels: tuple[int, ...] = (16, 32),
    head_width: int = 200,
    head_depth: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> nn.Sequential:
    """A small VGG-style CNN taking *flattened* images ``(b, C*H*W)``, like ``make_fcnn``.

    ``Unflatten -> [Conv3x3, ReLU, MaxPool2] * len(channels) -> Flatten -> head``, where the
    head is ``make_fcnn``'s ``Linear, ReLU, ..., Linear`` with ``head_depth`` linear layers
    of width ``head_width``. The head's linear layers are the model's only ``nn.Linear``
    modules, so linear layer 0 is the first one of the head and sees the convolutional
    features (what SPEAR recovers on a CNN). Random initialisation from a private RNG
    seeded with ``seed``; no pretrained weights (none can be had offline).
    """
    if in_channels < 1 or num_classes < 1 or head_width < 1 or not channels:
        raise ValueError("in_channels, num_classes, head_width must be positive and channels non-empty")
    if head_depth < 2:
        raise ValueError(f"head_depth must be >= 2 (a Linear followed by a ReLU, then the output), got {head_depth}")
    side = image_size
    for _ in channels:
        if side < 2:
            raise ValueError(f"image_size {image_size} is too small for {len(channels)} 2x2 poolings")
        side //= 2
    features = channels[-1] * side * side
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules: list[nn.Module] = [nn.Unflatten(1, (in_channels, image_size, image_size))]
        prev = in_channels
        for c in channels:
            modules += [nn.Conv2d(prev, c, 3, padding=1, dtype=dtype), nn.ReLU(), nn.MaxPool2d(2)]
            prev = c
        modules.append(nn.Flatten())
        head = make_fcnn(features, num_classes, width=head_width, depth=head_depth, seed=seed + 1, dtype=dtype)
    return nn.Sequential(*modules, *head)


def feature_extractor(model: nn.Sequential, index: int = 0) -> nn.Sequential:
    """The top-level modules of ``model`` before its ``index``-th ``nn.Linear``: the map from
    the model input to what that layer receives (a view sharing the model's weights)."""
    linears = [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    if not isinstance(model, nn.Sequential) or not -len(linears) <= index < len(linears):
        raise ValueError(f"need an nn.Sequential with a top-level nn.Linear number {index}")
    return model[: linears[index]]
