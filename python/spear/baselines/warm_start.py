"""Gradient matching started from SPEAR's partial result, for batches too large to finish.

For the first linear layer under FedSGD, ``gW = L R`` (rank b) and the batch is
``X = Q^-1 R``: every input lies in the row span of R. SPEAR's directions found so far
are columns q_j of Q. Writing ``X = P V`` with V the orthonormal rows of R
(``R = S^1/2 V``) gives ``P = Q^-1 S^1/2``, so row i of P is orthogonal to
``u_j = S^-1/2 q_j`` for every known j != i. The optimization below keeps exactly those
constraints and searches the rest:

* rows i < k (a known direction each) live in the complement of the other k-1 u's;
* rows i >= k live in the complement of all k u's;
* with k = 0 it is plain gradient matching restricted to the span (b^2 unknowns
  instead of b n), which is what SPEAR's factorization alone gives the optimization.

A known direction belongs to a specific input, so its label must be paired with it:
every ``relabel_every`` iterations the labels are re-paired (Hungarian assignment) so
that the output gradient the current estimate predicts for label y,
``J_j^T (softmax_j - e_y)``, points along the recovered ``L q_j`` (cosine, sign free).
The pixel box cannot be enforced by clamping in this parameterization; with ``bounds``
it is a penalty, ``box_weight * mean(violation^2)``.
"""
from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.func import jacrev, vmap

from ..attack.problem import prepare
from .inverting_gradients import (GradientMatching, IGConfig, InversionResult, _bounds, check_labels,
                                  check_target_gradients, optimize, prepare_model, resolve_device)


def _row_projectors(U: np.ndarray, b: int) -> np.ndarray:
    """(b, b, b): projector of row i onto the complement of the known u_j, j != i."""
    k = U.shape[1]
    eye = np.eye(b)

    def complement(cols: np.ndarray) -> np.ndarray:
        if cols.shape[1] == 0:
            return eye
        Qc, _ = np.linalg.qr(cols)
        return eye - Qc @ Qc.T

    all_known = complement(U)
    return np.stack([complement(np.delete(U, i, axis=1)) if i < k else all_known for i in range(b)])


def span_inverting_gradients(
    model: nn.Sequential,
    target_gradients: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    labels,
    directions: np.ndarray | None,
    *,
    config: IGConfig | None = None,
    image_shape: Sequence[int] | None = None,
    relabel_every: int | None = None,
    bounds: tuple | None = None,
    box_weight: float = 1.0,
    progress: bool = False,
) -> InversionResult:
    """Gradient matching in the span of the first layer's gradient, from SPEAR's directions.

    model: an ``nn.Sequential`` whose first module is the ``nn.Linear`` SPEAR attacked
        (the model input is that layer's input, e.g. ``spear.fl.make_fcnn``).
    target_gradients, labels: as in ``inverting_gradients`` (labels in any order).
    directions: the :class:`~spear.Reconstruction` that ran out of budget (its ``factor``
        says what its directions mean), or its ``directions`` array (b x k unit columns,
        k < b allowed) from ``spear.reconstruct`` run on the same gradient with
        ``batch_size=b``; None or k = 0 for the span-only optimization.
    relabel_every: iterations between label re-pairings (default: iterations // 20).
    Returns an :class:`InversionResult`; ``stats`` holds k and the final labels, which
    are paired with the rows of ``inputs``.
    """
    config = config or IGConfig()
    t0 = time.perf_counter()
    if not isinstance(model, nn.Sequential) or not isinstance(model[0], nn.Linear) or model[0].bias is None:
        raise ValueError("span_inverting_gradients needs an nn.Sequential whose first module is an "
                         "nn.Linear with bias (the layer SPEAR attacked)")
    device = resolve_device(config.device)
    work = prepare_model(model, device)
    target = check_target_gradients(work, target_gradients)
    first_name = next(n for n, m in work.named_modules() if m is work[0])
    gW = target[f"{first_name}.weight" if first_name else "weight"]
    num_classes = work(torch.zeros((1, gW.shape[1]), dtype=gW.dtype, device=device)).shape[-1]
    y = check_labels(labels, None, num_classes)
    b = len(y)
    factor = getattr(directions, "factor", None)
    if factor is None:
        # An array of directions: factor the gradient as spear.reconstruct does, so that
        # they refer to the same L and R.
        gb = target[f"{first_name}.bias" if first_name else "bias"]
        factor = prepare(gW, gb, b, device="cpu").factor()
    else:
        directions = directions.directions
    if factor.batch_size != b:
        raise ValueError(f"the reconstruction is for b = {factor.batch_size} inputs, "
                         f"but {b} labels were given")
    s = factor.spectrum[:b]
    V = factor.R / np.sqrt(s)[:, None]                                # (b, n) orthonormal rows
    q = np.zeros((b, 0)) if directions is None or np.size(directions) == 0 else np.asarray(directions, np.float64)
    if q.ndim != 2 or q.shape[0] != b or q.shape[1] > b or not np.isfinite(q).all():
        raise ValueError(f"directions must be a finite (b={b}) x k array with k <= b, got shape {q.shape}")
    k = q.shape[1]
    U = q / np.sqrt(s)[:, None]
    U = U / np.linalg.norm(U, axis=0, keepdims=True) if k else U
    dtype = next(work.parameters()).dtype
    proj = torch.as_tensor(_row_projectors(U, b), dtype=dtype, device=device)
    Vt = torch.as_tensor(V, dtype=dtype, device=device)
    delta = torch.as_tensor(factor.L @ q, dtype=torch.float64)        # (m, k): L q_j, known up to scale

    n = gW.shape[1]
    size = float(np.sqrt(n))      # a Gaussian start has rows of norm ~sqrt(n), as in pixel space
    gen = torch.Generator().manual_seed(config.seed)

    def to_inputs(theta: torch.Tensor) -> torch.Tensor:
        return torch.einsum("ij,ijk->ik", theta, proj) @ Vt

    matching = GradientMatching(work, target, y.to(device), tv_weight=config.tv_weight, image_shape=image_shape)
    box = _bounds(bounds, (b, n), device, dtype)

    class Objective:      # the matching objective plus the box penalty; labels live on ``matching``
        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            cost = matching(x)
            if box is not None and box_weight > 0:
                cost = cost + box_weight * (torch.relu(box[0] - x) + torch.relu(x - box[1])).pow(2).mean()
            return cost

        @property
        def labels(self) -> torch.Tensor:
            return matching.labels

        @labels.setter
        def labels(self, value: torch.Tensor) -> None:
            matching.labels = value

    objective = Objective()
    head = _double_copy(work[1:])
    W1 = work[0].weight.detach().cpu().double()
    b1 = work[0].bias.detach().cpu().double()
    label_pool = y.clone()

    def relabel(_it: int, theta: torch.Tensor) -> None:
        if k == 0:
            return
        x = to_inputs(theta).cpu().double()[:k]
        z = x @ W1.T + b1
        J = vmap(jacrev(lambda zj: head(zj.unsqueeze(0)).squeeze(0)))(z)     # (k, C, m)
        p = torch.softmax(head(z), dim=-1)
        cand = torch.einsum("kcm,kc->km", J, p)[:, None, :] - J                   # (k, C, m)
        d = delta.T[:, None, :]
        cos = (cand * d).sum(-1).abs() / (torch.linalg.norm(cand, dim=-1) * torch.linalg.norm(d, dim=-1) + 1e-300)
        cost = np.zeros((b, b))
        cost[:k] = 1.0 - cos[:, label_pool].detach().numpy()           # rows: inputs, cols: label slots
        rows, cols = linear_sum_assignment(cost)
        objective.labels = label_pool[cols[np.argsort(rows)]].to(device)

    every = relabel_every or max(1, config.iterations // 20)
    best, losses = None, []
    for r in range(config.restarts):
        start = torch.randn((b, b), generator=gen, dtype=dtype) * (size / np.sqrt(b))
        x, loss, history = optimize(objective, to_inputs, start.to(device), config, progress=progress,
                                    desc=f"span gradient matching, k={k} (restart {r + 1})",
                                    callback=relabel, callback_every=every, lr_scale=size / np.sqrt(b))
        losses.append(loss)
        if best is None or loss < best[1]:
            best = (x, loss, history, objective.labels.cpu().numpy().copy())
    x, loss, history, final_labels = best
    return InversionResult(inputs=x.cpu().double().numpy(), loss=loss, loss_history=history,
                           restart_losses=losses, seconds=time.perf_counter() - t0,
                           iterations=config.iterations,
                           stats={"device": str(device), "known_directions": int(k), "labels": final_labels})


def _double_copy(module: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(module).cpu().double().requires_grad_(False)
