"""Finish: from the search's selection to a :class:`Reconstruction`.

Scales and inputs come with the selection (``search.Selector``); here: the fit of what
was recovered, the verdict (complete only when the certificate's graded check agrees,
with the layer given), and the result with the factor its directions refer to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .certify import Certificate
from .problem import Factor, Problem
from .search import SearchOutcome


@dataclass
class Reconstruction:
    """Result of :func:`spear.reconstruct`.

    inputs: (b, n) recovered inputs, one per row, in arbitrary order; None when incomplete.
    complete: all b independent directions were found (and, with the layer given, the
        certificate's graded check calls them consistent).
    certified: the certificate's exact verdict when weight and bias were given, else None.
        Under noise (DP, FedAvg drift) it is False: exactness cannot be proven there, and
        ``certificate.violation_rate`` grades the result instead.
    directions: (b, k) unit directions found so far (columns), in the coordinates of
        ``factor.L``: dZ = L Q, X^T = Q^-1 R.
    noise_level: relative noise of L, s_{b+1} / s_b (0 to 1e-7 for exact float32 gradients).
    fit: relative residuals of what was recovered: "weight" ||gW - L R|| / ||gW|| (what
        rank b cannot explain) and "bias" ||dZ' 1 - gb|| / ||gb||.
    factor: L, R, the spectrum and the live rows (host arrays): what ``directions`` mean.
    """

    inputs: np.ndarray | None
    complete: bool
    certified: bool | None
    batch_size: int
    directions: np.ndarray
    noise_level: float
    stats: dict[str, Any] = field(default_factory=dict)
    certificate: Certificate | None = None
    fit: dict[str, float] = field(default_factory=dict)
    factor: Factor | None = None

    def __repr__(self) -> str:
        return (f"Reconstruction(batch_size={self.batch_size}, complete={self.complete}, "
                f"certified={self.certified}, samples={self.stats.get('samples')}, "
                f"backend={self.stats.get('backend')!r})")


def finish(problem: Problem, outcome: SearchOutcome, stats: dict) -> Reconstruction:
    """The verdict on a search: with the layer known, only a set the certificate calls at
    least consistent counts as complete. Consistent is graded evidence, not proof (a wrong
    set with violations spread evenly can pass it); only ``certified`` proves."""
    sel = outcome.selection
    inputs = cert = None
    certified = None if problem.certifier is None else False
    fit: dict[str, float] = {}
    if sel is not None:
        cert = sel.certificate
        if cert is not None:
            certified = bool(cert.certified)
        fit = _fit(problem, sel.Q)
    complete = sel is not None and (cert is None or cert.consistent)
    if complete:
        inputs = problem.backend.to_numpy(sel.X)
    return Reconstruction(inputs=inputs, complete=complete, certified=certified,
                          batch_size=problem.b, directions=outcome.directions,
                          noise_level=problem.tolerances.noise_rel, stats=stats,
                          certificate=cert, fit=fit, factor=problem.factor())


def _fit(problem: Problem, Q) -> dict[str, float]:
    """Relative residuals: what rank b leaves of gW, and how well dZ' 1 gives gb."""
    xp, b = problem.xp, problem.b
    explained = float(np.sum(np.asarray(problem.spectrum[:b], dtype=np.float64) ** 2))
    total = float(xp.sum(problem.gW * problem.gW))
    return {"weight": float(np.sqrt(max(total - explained, 0.0) / total)),
            "bias": float(xp.linalg.norm((problem.L @ Q).sum(axis=1) - problem.gb))
            / max(float(xp.linalg.norm(problem.gb)), 1e-300)}
