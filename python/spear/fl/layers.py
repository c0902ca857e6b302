"""Locating linear layers and checking that SPEAR's ReLU assumption holds for them.

SPEAR needs the attacked ``nn.Linear`` to feed a ReLU: the sparsity of the ReLU
derivative is what makes the gradient decomposition solvable. For ``nn.Sequential``
containers this is read off the module order. For arbitrary ``nn.Module`` models it
is detected at run time with forward hooks: the Linear's output tensor must be the
very tensor an ``nn.ReLU`` module receives. A functional ``F.relu`` (or
``torch.relu``) call inside ``forward`` is invisible to hooks and cannot be
detected; when you know it is there, pass ``assume_relu=True``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """All ``nn.Linear`` submodules of ``model`` (including itself) in module order."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def _linear_at(model: nn.Module, index: int) -> nn.Linear:
    layers = linear_layers(model)
    if not layers:
        raise ValueError("model contains no nn.Linear layer")
    if not -len(layers) <= index < len(layers):
        raise ValueError(
            f"linear layer index {index} out of range: model has {len(layers)} nn.Linear layers, "
            f"valid indices are 0..{len(layers) - 1} (or negative from the end)"
        )
    return layers[index]


def _run(model: nn.Module, example_input: Any) -> None:
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    with torch.no_grad():
        model(*args)


def check_followed_by_relu(model: nn.Module, layer: nn.Linear, example_input: Any) -> bool:
    """Whether every output ``layer`` produces in ``model(example_input)`` enters an ``nn.ReLU``.

    Detection is by identity: a forward hook records the Linear's output tensors and a
    forward pre-hook records what each ``nn.ReLU`` module receives. ``F.relu`` calls are
    not modules and are therefore reported as *not* followed by a ReLU. Returns False
    when the layer is not used in the forward pass. ``example_input`` may be a tuple of
    positional arguments.
    """
    produced: list[torch.Tensor] = []
    consumed: list[torch.Tensor] = []
    handles = [layer.register_forward_hook(lambda _m, _i, out: produced.append(out))]
    for module in model.modules():
        if isinstance(module, nn.ReLU):
            handles.append(module.register_forward_pre_hook(lambda _m, inp: consumed.append(inp[0])))
    try:
        _run(model, example_input)
    finally:
        for handle in handles:
            handle.remove()
    # The lists keep the tensors alive, so identity comparisons cannot alias recycled ids.
    return bool(produced) and all(any(out is seen for seen in consumed) for out in produced)


def _static_relu_check(model: nn.Module, layer: nn.Linear) -> tuple[bool | None, str]:
    """Decide from the module tree alone; ``None`` when the tree does not tell."""
    for name, container in model.named_modules():
        if not isinstance(container, nn.Sequential):
            continue
        children = list(container)
        for pos, child in enumerate(children):
            if child is not layer:
                continue
            if pos + 1 < len(children):
                nxt = children[pos + 1]
                return isinstance(nxt, nn.ReLU), f"next module is {type(nxt).__name__}"
            if container is model:
                return False, "it is the last module, its output is the model output"
            return None, f"it is the last module of sub-container {name!r}"
    return None, "it is not inside an nn.Sequential"


def attackable_layer(
    model: nn.Module,
    index: int,
    *,
    example_input: Any = None,
    assume_relu: bool = False,
) -> nn.Linear:
    """Return the ``index``-th ``nn.Linear`` after checking that its output goes through a ReLU.

    The check uses the ``nn.Sequential`` module order when it is conclusive, otherwise
    the forward-hook detection of :func:`check_followed_by_relu` on ``example_input``.
    ``assume_relu=True`` skips the check (needed when the model applies ``F.relu``).
    Raises ValueError for an out-of-range index, for a layer not followed by a ReLU,
    and when the structure is inconclusive and no ``example_input`` is given.
    """
    layer = _linear_at(model, index)
    if assume_relu:
        return layer
    verdict, reason = _static_relu_check(model, layer)
    if verdict is None and example_input is not None:
        verdict = check_followed_by_relu(model, layer, example_input)
        reason = "forward hooks saw its output enter no nn.ReLU module"
    if verdict is None:
        raise ValueError(
            f"cannot tell whether linear layer {index} is followed by a ReLU ({reason}); "
            "pass example_input for hook-based detection, or assume_relu=True"
        )
    if not verdict:
        raise ValueError(
            f"linear layer {index} is not followed by an nn.ReLU ({reason}); SPEAR needs a "
            "Linear+ReLU layer. If the model uses functional F.relu, pass assume_relu=True"
        )
    return layer


def layer_input(model: nn.Module, x: torch.Tensor, index: int) -> torch.Tensor:
    """The features the ``index``-th ``nn.Linear`` receives when ``model`` processes ``x``.

    This is the ground truth a reconstruction of a deeper layer must be compared with.
    If the layer runs more than once in a forward pass, its first input is returned.
    """
    layer = _linear_at(model, index)
    seen: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _m, inp: seen.append(inp[0].detach().clone()))
    try:
        _run(model, x)
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"linear layer {index} was not used in the forward pass")
    return seen[0]
