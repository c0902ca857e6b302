"""Synthetic client gradients with known inputs: exercise the attack without a dataset.

>>> g = first_layer_gradients(20, width=400, n=784, positive=True, seed=1)
>>> rec = spear.reconstruct(g.grad_weight, g.grad_bias, weight=g.weight, bias=g.bias)
>>> spear.metrics.feature_metrics(rec.inputs, g.inputs)["recovered_fraction"]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .fl import make_fcnn


@dataclass
class LayerGradients:
    """What a server observes for the first layer, and what the client's batch was."""

    grad_weight: torch.Tensor
    grad_bias: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    inputs: np.ndarray        # (b, n) float64 copy of what the layer saw


def first_layer_gradients(b: int, *, width: int = 200, n: int = 784, depth: int = 3,
                          positive: bool = False, dtype=torch.float32, seed: int = 0,
                          classes: int = 10) -> LayerGradients:
    """Gradient of the mean cross-entropy of a random batch w.r.t. the first layer of a
    random ``make_fcnn`` network.

    positive=True draws raw-pixel-like inputs in [0, 1]; otherwise zero-mean Gaussian.
    """
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, n, generator=g, dtype=torch.float64) if positive
         else torch.randn(b, n, generator=g, dtype=torch.float64)).to(dtype)
    y = torch.randint(0, classes, (b,), generator=g)
    net = make_fcnn(n, classes, width=width, depth=depth, seed=seed, dtype=dtype)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    gw, gb = torch.autograd.grad(loss, [net[0].weight, net[0].bias])
    return LayerGradients(gw, gb, net[0].weight.detach(), net[0].bias.detach(), x.double().numpy())
