"""Extract what the attacker observes for one linear layer from a client update."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .layers import _linear_at


@dataclass(frozen=True)
class LayerPayload:
    """Gradient and server weights of one ``nn.Linear`` layer, as numpy arrays.

    ``grad_weight`` (m, n) and ``grad_bias`` (m,) are the client's update for the layer;
    ``weight`` (m, n) and ``bias`` (m,) are the weights the server sent (before any
    local training). ``name`` is the layer's module path inside the model.
    """

    grad_weight: np.ndarray
    grad_bias: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    name: str


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().copy()


def layer_payload(model: nn.Module, update: dict[str, torch.Tensor], index: int) -> LayerPayload:
    """The :class:`LayerPayload` of the ``index``-th ``nn.Linear`` of ``model``.

    ``update`` is the dict returned by ``client_update``; its keys are found through the
    model's module names. ``model`` must still hold the server's weights (``client_update``
    never modifies it). This does not check for a following ReLU: use ``attackable_layer``.
    """
    layer = _linear_at(model, index)
    if layer.bias is None:
        raise ValueError(f"linear layer {index} has no bias; SPEAR needs the bias gradient")
    name = next(n for n, m in model.named_modules() if m is layer)
    prefix = f"{name}." if name else ""
    keys = (f"{prefix}weight", f"{prefix}bias")
    missing = [k for k in keys if k not in update]
    if missing:
        raise ValueError(f"update has no entry for {missing}; does it come from this model?")
    grad_weight, grad_bias = update[keys[0]], update[keys[1]]
    if grad_weight.shape != layer.weight.shape or grad_bias.shape != layer.bias.shape:
        raise ValueError(
            f"update shapes {tuple(grad_weight.shape)}, {tuple(grad_bias.shape)} do not match layer "
            f"{name!r} shapes {tuple(layer.weight.shape)}, {tuple(layer.bias.shape)}"
        )
    return LayerPayload(
        grad_weight=_numpy(grad_weight),
        grad_bias=_numpy(grad_bias),
        weight=_numpy(layer.weight),
        bias=_numpy(layer.bias),
        name=name,
    )
