"""Test helpers: exact gradients of small torch ReLU networks with known inputs."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from spear.fl import make_fcnn


@dataclass
class LayerGradients:
    grad_weight: torch.Tensor
    grad_bias: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    inputs: np.ndarray        # (b, n) float64 copy of what the layer saw


def first_layer_gradients(b: int, *, width: int = 200, n: int = 784, depth: int = 3,
                          positive: bool = False, dtype=torch.float32, seed: int = 0,
                          classes: int = 10) -> LayerGradients:
    """Gradient of the mean cross-entropy of a random batch w.r.t. the first layer.

    positive=True draws raw-pixel-like inputs in [0, 1]; otherwise zero-mean Gaussian.
    """
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, n, generator=g, dtype=torch.float64) if positive
         else torch.randn(b, n, generator=g, dtype=torch.float64)).to(dtype)
    y = torch.randint(0, classes, (b,), generator=g)
    net = make_fcnn(n, classes, width=width, depth=depth, seed=seed, dtype=dtype)
    loss = torch.nn.functional.cross_entropy(net(x), y)
    gw, gb = torch.autograd.grad(loss, [net[0].weight, net[0].bias])
    return LayerGradients(gw, gb, net[0].weight.detach(), net[0].bias.detach(),
                          x.double().numpy())


def matched_relative_errors(recon: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Hungarian-matched relative L2 error of each true input."""
    d = ((recon[:, None, :] - truth[None, :, :]) ** 2).sum(-1)
    i, j = linear_sum_assignment(d)
    return np.sqrt(d[i, j]) / np.linalg.norm(truth[j], axis=1)
