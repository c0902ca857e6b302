"""Finish: from the search's selection to a :class:`Reconstruction`.

Scales and inputs come with the selection (``search.Selector``); here: the fit of what
was recovered, the verdict (complete only when the certificate's graded check agrees,
with the layer given), and the result with the factor its directions refer to.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .budget import Budget
from .certify import Certificate
from .diagnose import diagnose, verdict_of
from .problem import Factor, Problem
from .search import SearchOutcome
from .tolerance import MIN_JUDGED_PER_COLUMN, OUTLIER_FACTOR, PRECISE_INPUT_ERROR, RATE_FLOOR


#: A rejected set gives back the inputs its certificate clears only when at least this
#: fraction of its columns break no sign rule. Measured: trained MLP, b = 50, two rejected
#: sets with 44 and 47 such columns: every one of those inputs within 2.3e-3 of the truth;
#: all-positive b = 16 at random init, 5 of 16 clean: two of the five 0.8% and 1.5% off
#: (wrong columns corrupt each other's inputs in chains).
PARTIAL_CLEAN_FRACTION = 0.75


@dataclass
class Reconstruction:
    """Result of :func:`spear.reconstruct`.

    inputs: (k, n) recovered inputs, one per row, in arbitrary order (k = b, or fewer
        when the verdict is "partial": inputs below the gradient's level left out, or
        the inputs of a rejected set whose columns break no sign rule); None unless the
        verdict is certified, consistent, partial or (opted in) unverified.
    complete: the verdict is "certified" or "consistent": all b independent directions
        were found and the certificate's graded check calls them consistent.
    verdict: "certified" | "consistent" | "partial" | "unverified" | "rejected" | "incomplete"
        (see :mod:`spear.attack.diagnose`).
    diagnosis: why the result is less than certified, with the numbers; None when certified.
    input_status: one status per row of ``inputs`` ("certified"; "consistent": in a
        certified set, an input whose expected error ``certificate.input_errors`` passes
        1e-3 (rounding leaves it imprecise), else not proven; "suspect": its column stands
        out in the graded check; "unverified"); None without inputs.
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
    verdict: str = "incomplete"
    diagnosis: str | None = None
    input_status: list[str] | None = None

    def __repr__(self) -> str:
        return (f"Reconstruction(batch_size={self.batch_size}, verdict={self.verdict!r}, "
                f"complete={self.complete}, certified={self.certified}, "
                f"samples={self.stats.get('samples')}, backend={self.stats.get('backend')!r})")


def finish(problem: Problem, outcome: SearchOutcome, budget: Budget, stats: dict) -> Reconstruction:
    """The verdict on a search: with the layer known, only a set the certificate calls at
    least consistent counts as complete. Consistent is graded evidence, not proof (a wrong
    set with violations spread evenly can pass it); only ``certified`` proves. Without the
    layer (opt-in) nothing is checked: the inputs come back, never called complete."""
    sel = outcome.selection
    has_layer = problem.certifier is not None
    verdict = verdict_of(sel, has_layer, partial=problem.b < problem.requested)
    cert = sel.certificate if sel is not None else None
    inputs = status = None
    diagnosis = diagnose(problem, outcome, budget, verdict)
    if verdict in ("certified", "consistent", "partial", "unverified"):
        inputs = problem.backend.to_numpy(sel.X)
        status = _input_status(verdict, cert, problem.b)
    elif verdict == "rejected" and (clean := clean_columns(cert)).sum() >= PARTIAL_CLEAN_FRACTION * problem.b:
        # A wrong column (q_j + c q_k) corrupts only input k (row k of Q^-1); when few
        # columns are wrong, the inputs whose columns break no sign rule are right.
        verdict = "partial"
        inputs = problem.backend.to_numpy(sel.X)[clean]
        status = ["consistent"] * int(clean.sum())
        diagnosis = (f"{int(clean.sum())} of {problem.requested} inputs returned, consistent, not "
                     "certified: their columns break no sign rule, but the proof needs the whole "
                     f"set; the other {problem.b - int(clean.sum())} directions are rejected"
                     + (f" and {problem.requested - problem.b} inputs lie below the gradient's level "
                        f"({problem.rank.describe(problem.spectrum)})"
                        if problem.b < problem.requested else "") + ": " + diagnosis)
    stats["verdict"] = verdict
    return Reconstruction(inputs=inputs, complete=verdict in ("certified", "consistent"),
                          certified=None if not has_layer else bool(cert is not None and cert.certified),
                          batch_size=problem.requested, directions=outcome.directions,
                          noise_level=problem.tolerances.noise_rel, stats=stats,
                          certificate=cert, fit={} if sel is None else _fit(problem, sel.Q),
                          factor=problem.factor(), verdict=verdict, diagnosis=diagnosis,
                          input_status=status)


def _input_status(verdict: str, cert: Certificate | None, b: int) -> list[str]:
    if verdict == "partial":
        verdict = "certified" if cert.certified else "consistent"
    if verdict == "certified" and cert.input_errors is not None:
        # The set is proven; an input that rounding leaves imprecise is said to be so.
        return ["certified" if e <= PRECISE_INPUT_ERROR else "consistent" for e in cert.input_errors]
    if verdict != "consistent":
        return [verdict] * b
    return ["suspect" if s else "consistent" for s in suspect_columns(cert)]


def clean_columns(cert: Certificate) -> np.ndarray:
    """Columns of a rejected set that break no sign rule and were judged on enough
    entries to say so."""
    judged = np.asarray(cert.column_judged) if cert.column_judged is not None else 0
    return (np.asarray(cert.per_column) == 0) & (judged >= MIN_JUDGED_PER_COLUMN)


def suspect_columns(cert: Certificate) -> np.ndarray:
    """Columns that look like a wrong direction: well above the others in the graded
    check, or breaking the exact sign rule where most columns do not (measured: a trained
    MLP's hidden layer, b = 8: one column 4% off with 5 exact violations, the other seven
    exact with none, and a graded rate of 0.022 that passed)."""
    rates = cert.column_rates
    per_col = np.asarray(cert.per_column)
    outlier = rates > OUTLIER_FACTOR * (float(np.median(rates)) + RATE_FLOOR)
    lone = (per_col > 0) & (float(np.median(per_col)) == 0)
    return outlier | lone


def _fit(problem: Problem, Q) -> dict[str, float]:
    """Relative residuals: what rank b leaves of gW, and how well dZ' 1 gives gb."""
    xp, b = problem.xp, problem.b
    explained = float(np.sum(np.asarray(problem.spectrum[:b], dtype=np.float64) ** 2))
    total = float(xp.sum(problem.gW * problem.gW))
    return {"weight": float(np.sqrt(max(total - explained, 0.0) / total)),
            "bias": float(xp.linalg.norm((problem.L @ Q).sum(axis=1) - problem.gb))
            / max(float(xp.linalg.norm(problem.gb)), 1e-300)}
