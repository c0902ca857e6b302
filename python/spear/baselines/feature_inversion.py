"""From features SPEAR recovered on a CNN's first linear layer back to images and labels.

On a CNN whose classifier head starts with Linear+ReLU, SPEAR recovers the *input of the
first linear layer* exactly: the flattened convolutional features f_j of every image.
Two steps turn them into a reconstruction of the batch:

* :func:`infer_labels`: with the features known, the layer's weight gradient
  ``gW = sum_j delta_j f_j^T`` gives every per-input output gradient ``delta_j`` by least
  squares; for each candidate label y the head predicts ``delta_j(y)`` exactly, and the
  best fit names the label. No labels need to be known.
* :func:`feature_inversion`: optimize images ``x`` so that the convolutional part
  reproduces the features, ``||phi(x) - f||^2 / ||f||^2 + tv_weight * TV(x)`` (Adam, step
  schedule, pixel box), the classical feature-inversion problem. The result can then be
  refined with the gradient-matching attack (:func:`inverting_gradients` with ``init=``).
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import jacrev, vmap

from .inverting_gradients import (IGConfig, InversionResult, _bounds, best_of_restarts,
                                  resolve_device, total_variation)

#: Feature inversion is a plain least-squares fit: unsigned Adam converges further than signed.
FEATURE_DEFAULTS = IGConfig(iterations=1000, lr=0.05, tv_weight=1e-2, signed=False)


def _features_tensor(features, device, dtype) -> torch.Tensor:
    f = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if f.dim() != 2 or f.shape[0] == 0:
        raise ValueError(f"features must be (b, d) with b >= 1, got shape {tuple(f.shape)}")
    if not torch.isfinite(f).all():
        raise ValueError("features contain NaN or Inf")
    return f.to(device, dtype)


def feature_inversion(
    extractor: Callable[[torch.Tensor], torch.Tensor],
    features,
    input_shape: Sequence[int],
    *,
    config: IGConfig | None = None,
    image_shape: Sequence[int] | None = None,
    bounds: tuple | None = None,
    init=None,
    progress: bool = False,
) -> InversionResult:
    """Images whose features under ``extractor`` match ``features`` (b, d), row by row.

    extractor: maps a batch ``(b, *input_shape)`` to ``(b, d)``, e.g. the modules of a CNN
        before its first linear layer (``spear.fl.feature_extractor``); an ``nn.Module``
        is moved to the configured device.
    config: optimizer settings (default :data:`FEATURE_DEFAULTS`; restarts pick the
        lowest final loss). image_shape, bounds, init: as in ``inverting_gradients``.
    """
    config = config or FEATURE_DEFAULTS
    t0 = time.perf_counter()
    device = resolve_device(config.device)
    if isinstance(extractor, nn.Module):
        param = next(extractor.parameters(), None)
        if param is not None and param.device != device:
            import copy

            extractor = copy.deepcopy(extractor).to(device)
        dtype = param.dtype if param is not None else torch.float32
    else:
        dtype = torch.float32
    target = _features_tensor(features, device, dtype)
    b = target.shape[0]
    input_shape = tuple(int(s) for s in input_shape)
    shape = (b, *input_shape)
    with torch.no_grad():
        produced = extractor(torch.zeros(shape, dtype=dtype, device=device))
    if tuple(produced.shape) != tuple(target.shape):
        raise ValueError(f"the extractor makes features of shape {tuple(produced.shape)} from inputs "
                         f"{shape}, the features given are {tuple(target.shape)}")
    if image_shape is not None and int(np.prod(image_shape)) != int(np.prod(input_shape)):
        raise ValueError(f"image_shape {tuple(image_shape)} does not hold an input of shape {input_shape}")
    scale = (target * target).sum().clamp_min(1e-30)

    def objective(x: torch.Tensor) -> torch.Tensor:
        cost = ((extractor(x) - target) ** 2).sum() / scale
        if config.tv_weight > 0 and image_shape is not None:
            cost = cost + config.tv_weight * total_variation(x, image_shape)
        return cost

    box = _bounds(bounds, shape, device, dtype)
    project = None if box is None else (lambda t: t.copy_(torch.maximum(torch.minimum(t, box[1]), box[0])))
    if init is not None:
        init = torch.as_tensor(np.asarray(init) if not isinstance(init, torch.Tensor) else init)
        if tuple(init.shape) != shape:
            raise ValueError(f"init has shape {tuple(init.shape)}, expected {shape}")
        init = init.to(device, dtype)
    x, loss, history, losses = best_of_restarts(objective, shape, init, config, project, device,
                                                dtype, progress, "feature inversion")
    with torch.no_grad():
        rel = float(torch.linalg.norm(extractor(x) - target) / torch.sqrt(scale))
    return InversionResult(inputs=x.cpu().double().numpy(), loss=loss, loss_history=history,
                           restart_losses=losses, seconds=time.perf_counter() - t0,
                           iterations=config.iterations,
                           stats={"device": str(device), "feature_rel_err": rel})


def infer_labels(linear: nn.Linear, head: nn.Module, features, grad_weight, num_classes: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Labels of the inputs whose features ``linear`` saw, from its weight gradient alone.

    linear: the attacked layer (its weight and bias are the server's).
    head: what follows it up to the logits (ReLU, Linear, ..., Linear).
    features: (b, n) the layer's recovered inputs; grad_weight: (m, n) its gradient.
    Returns (labels (b,), relative residual (b,) of the best fit: near 0 when the features
    and the gradient are exact). The per-input scale is fitted freely, so the mean or
    sum reduction of the loss does not matter.
    """
    W = linear.weight.detach()
    bias = None if linear.bias is None else linear.bias.detach()
    dtype = torch.float64
    f = _features_tensor(features, "cpu", dtype)
    gW = torch.as_tensor(np.asarray(grad_weight) if not isinstance(grad_weight, torch.Tensor) else grad_weight)
    gW = gW.detach().cpu().to(dtype)
    if gW.shape != W.shape or f.shape[1] != W.shape[1]:
        raise ValueError(f"shapes do not fit the layer {tuple(W.shape)}: grad_weight {tuple(gW.shape)}, "
                         f"features {tuple(f.shape)}")
    # gW = Delta F  with Delta (m x b): least squares over the b feature rows.
    delta = torch.linalg.lstsq(f.T, gW.T).solution.T          # (m, b)
    head64 = _double_copy(head).requires_grad_(False)
    z = f @ W.cpu().to(dtype).T + (0 if bias is None else bias.cpu().to(dtype))

    def logits(zj: torch.Tensor) -> torch.Tensor:
        return head64(zj.unsqueeze(0)).squeeze(0)

    J = vmap(jacrev(logits))(z)                                # (b, C, m)
    if J.shape[1] != num_classes:
        raise ValueError(f"the head returns {J.shape[1]} logits, num_classes is {num_classes}")
    p = torch.softmax(vmap(logits)(z), dim=-1)                 # (b, C)
    common = torch.einsum("bcm,bc->bm", J, p)                  # J^T p
    cand = common[:, None, :] - J                              # (b, C, m): J^T (p - e_y)
    d = delta.T[:, None, :]                                    # (b, 1, m)
    alpha = (cand * d).sum(-1) / (cand * cand).sum(-1).clamp_min(1e-300)
    resid = torch.linalg.norm(d - alpha[..., None] * cand, dim=-1) / torch.linalg.norm(d, dim=-1).clamp_min(1e-300)
    best = resid.argmin(dim=1)
    return best.numpy().astype(np.int64), resid.gather(1, best[:, None]).squeeze(1).detach().numpy()


def _double_copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).cpu().double()
