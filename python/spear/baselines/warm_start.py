"""Gradient matching started from SPEAR's partial result, for batches too large to finish.

For the first linear layer under FedSGD, ``gW = L R`` (rank b) and the batch is
``X = Q^-1 R``: every input lies in the row span of R. SPEAR's directions found so far
are columns q_j of Q. Writing ``X = P V`` with V the orthonormal rows of R
(``R = S^1/2 V``) gives ``P = Q^-1 S^1/2``, so row i of P is orthogonal to
``u_j = S^-1/2 q_j`` for every known j != i. Those are the constraints kept here:

* the input that belongs to a known direction j lies in the span, orthogonal to the
  other k-1 u's (in pixel space: to ``V^T u_l``);
* every other input lies in the span, orthogonal to all k u's.

Each set is a linear subspace that holds the true input, so projecting onto it never
moves an estimate away from that input. The optimization is Inverting Gradients itself
(pixel space, same objective, optimizer, step schedule, box and prior, same random start
as :func:`inverting_gradients` at the same seed) for the first ``project_from`` of the
iterations; the rest run from there with a step schedule of their own and the iterate
projected onto the constraints after every step. Optimizing *inside* the constraints
from the start (the b x b span coefficients as the variables, which this module did
before) matches far worse than the pixel space: on TinyImageNet, b = 24 (300
iterations, no directions) it ended at loss 0.24 and 16 dB against 0.043 and 27 dB for
plain pixel-space matching; a pixel-space run projected from its first step did no
better (0.23, 16 dB). Free for the first half, then held, with 49 of 50 directions known
(b = 50, m = 400, 500 iterations): loss 0.025, 41.0 dB, SSIM 0.987 (IG alone 0.042,
26.4 dB, 0.913; the old span parameterization 0.054, 35.1 dB, 0.914). With few
directions the constraints are little more than the span and a held phase cost 4.8 dB (b =
24, 300 iterations: 5 of 24 known, the last 31 iterations held, 22.3 dB against 27.1 for
IG alone), so below half the directions only the final iterate is projected: that
cannot lower any input's PSNR when its row is paired with the right direction (the span
and the pixel box hold the true inputs). Where between the two the held phase starts to
pay is not measured.

Which row belongs to which known direction is not given (rows are paired with the labels
as in Inverting Gradients): when the projection is switched on, and every ``reassign``
iterations after, direction j goes to the row whose span coefficients p_i are most
aligned with u_j (Hungarian assignment on |cos(p_i, u_j)|; a true input has p_i . u_j = 0
for every other direction j).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Mapping, Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..attack.problem import prepare
from .inverting_gradients import (GradientMatching, IGConfig, InversionResult, _bounds, check_labels,
                                  check_target_gradients, optimize, prepare_model, resolve_device)


def _complement(cols: np.ndarray, b: int) -> np.ndarray:
    """Projector of R^b onto the orthogonal complement of the columns."""
    if cols.shape[1] == 0:
        return np.eye(b)
    Qc, _ = np.linalg.qr(cols)
    return np.eye(b) - Qc @ Qc.T


class _Constraints:
    """The subspaces of the rows, given which row carries which known direction."""

    def __init__(self, V: np.ndarray, U: np.ndarray, dtype, device):
        self.b, self.k = V.shape[0], U.shape[1]
        self.U = U
        self.V64 = V
        self.V = torch.as_tensor(V, dtype=dtype, device=device)
        # own[j]: complement of the other k-1 u's (the row of direction j); rest: of all k.
        self.own = np.stack([_complement(np.delete(U, j, axis=1), self.b) for j in range(self.k)]) if self.k \
            else np.zeros((0, self.b, self.b))
        self.rest = _complement(U, self.b)
        self.assignment = np.full(self.b, -1)
        self.dtype, self.device = dtype, device
        self._build()

    def _build(self) -> None:
        rows = [self.own[j] if j >= 0 else self.rest for j in self.assignment]
        self.proj = torch.as_tensor(np.stack(rows), dtype=self.dtype, device=self.device)

    def assign(self, x: torch.Tensor) -> None:
        """Give each known direction the row most aligned with it (Hungarian)."""
        if self.k == 0:
            return
        P = x.detach().cpu().double().numpy() @ self.V64.T                        # (b, b) span coefficients
        cos = np.abs(P @ self.U) / (np.linalg.norm(P, axis=1, keepdims=True) + 1e-300)   # U: unit columns
        rows, cols = linear_sum_assignment(-cos)
        assignment = np.full(self.b, -1)
        assignment[rows] = cols
        if not np.array_equal(assignment, self.assignment):
            self.assignment = assignment
            self._build()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        coeff = x @ self.V.T
        return torch.einsum("ij,ijk->ik", coeff, self.proj) @ self.V


def span_inverting_gradients(
    model: nn.Sequential,
    target_gradients: Mapping[str, torch.Tensor] | Sequence[torch.Tensor],
    labels,
    directions,
    *,
    config: IGConfig | None = None,
    image_shape: Sequence[int] | None = None,
    bounds: tuple | None = None,
    project_from: float | None = None,
    reassign: int | None = None,
    progress: bool = False,
) -> InversionResult:
    """Inverting Gradients held to the span of the first layer's gradient and SPEAR's directions.

    model: an ``nn.Sequential`` whose first module is the ``nn.Linear`` SPEAR attacked
        (the model input is that layer's input, e.g. ``spear.fl.make_fcnn``).
    target_gradients, labels: as in ``inverting_gradients``; row i of the result is
        paired with labels[i].
    directions: the :class:`~spear.Reconstruction` that ran out of budget (its ``factor``
        says what its directions mean), or its ``directions`` array (b x k unit columns,
        k <= b) from ``spear.reconstruct`` run on the same gradient with ``batch_size=b``;
        None or k = 0: the span alone.
    bounds: the pixel box, as in ``inverting_gradients`` (clamped after the projection).
    project_from: fraction of the iterations run free (Inverting Gradients itself); the
        rest are projected onto the constraints after every step, with a step schedule
        of their own. Default: 0.5 when at least half the directions are known, else 1
        (only the final iterate is projected, as it always is).
    reassign: iterations between re-assignments of directions to rows (default
        iterations // 20).
    Returns an :class:`InversionResult`; ``stats`` holds k, the labels of the rows and
    ``assignment`` (the known direction of each row, -1 for none).
    """
    config = config or IGConfig()
    if project_from is not None and not 0.0 <= project_from <= 1.0:
        raise ValueError(f"project_from must lie in [0, 1], got {project_from}")
    t0 = time.perf_counter()
    if not isinstance(model, nn.Sequential) or not isinstance(model[0], nn.Linear) or model[0].bias is None:
        raise ValueError("span_inverting_gradients needs an nn.Sequential whose first module is an "
                         "nn.Linear with bias (the layer SPEAR attacked)")
    device = resolve_device(config.device)
    work = prepare_model(model, device)
    target = check_target_gradients(work, target_gradients)
    first_name = next(n for n, m in work.named_modules() if m is work[0])
    gW = target[f"{first_name}.weight" if first_name else "weight"]
    dtype = next(work.parameters()).dtype
    with torch.no_grad():
        num_classes = work(torch.zeros((1, gW.shape[1]), dtype=dtype, device=device)).shape[-1]
    y = check_labels(labels, None, num_classes).to(device)
    b, n = len(y), gW.shape[1]
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

    box = _bounds(bounds, (b, n), device, dtype)
    constraints = _Constraints(V, U, dtype, device)
    state = {"on": False}

    def clamp(t: torch.Tensor) -> None:
        if box is not None:
            t.copy_(torch.maximum(torch.minimum(t, box[1]), box[0]))

    def project(t: torch.Tensor) -> None:         # after every step: constraints (once on), then the box
        if state["on"]:
            t.copy_(constraints(t))
        clamp(t)

    N = config.iterations
    if project_from is None:
        # Few directions leave the constraint set close to the span alone, where matching
        # under the constraints does worse than in the pixel space (module docstring).
        project_from = 0.5 if 2 * k >= b else 1.0
    switch = int(np.ceil(project_from * N)) if k else N      # no direction: the final iterate only
    every = reassign or max(1, (N - switch) // 10)

    def reassign_rows(_it: int, theta: torch.Tensor) -> None:
        constraints.assign(theta)
        project(theta)

    objective = GradientMatching(work, target, y, tv_weight=config.tv_weight, image_shape=image_shape)
    gen = torch.Generator().manual_seed(config.seed)     # the starts of inverting_gradients at this seed
    free = dataclasses.replace(config, iterations=switch) if switch else None
    held = dataclasses.replace(config, iterations=N - switch) if switch < N else None
    best, losses = None, []
    for r in range(config.restarts):
        state["on"] = False
        x = torch.randn((b, n), generator=gen, dtype=dtype).to(device)
        clamp(x)
        history = []
        if free is not None:      # Inverting Gradients itself, step for step
            x, _, history = optimize(objective, lambda t: t, x, free, project=project, progress=progress,
                                     desc=f"gradient matching (restart {r + 1})")
        if held is not None:      # then held to the constraints, with a step schedule of its own
            state["on"] = True
            x, _, more = optimize(objective, lambda t: t, x, held, project=project, progress=progress,
                                  desc=f"gradient matching held to k={k} directions (restart {r + 1})",
                                  callback=reassign_rows, callback_every=every)
            history += more
        # The result always satisfies the constraints: a projection onto subspaces that
        # hold the true inputs, then the box, never moves a row away from its input.
        with torch.no_grad():
            x = x.clone()
            constraints.assign(x)
            x.copy_(constraints(x))
            clamp(x)
        loss = float(objective(x).detach())      # outside no_grad: the objective differentiates
        history.append(loss)
        losses.append(loss)
        if best is None or loss < best[1]:
            best = (x, loss, history, constraints.assignment.copy())
    x, loss, history, assignment = best
    return InversionResult(inputs=x.cpu().double().numpy(), loss=loss, loss_history=history,
                           restart_losses=losses, seconds=time.perf_counter() - t0,
                           iterations=config.iterations,
                           stats={"device": str(device), "known_directions": int(k),
                                  "labels": y.cpu().numpy().copy(), "assignment": assignment})
