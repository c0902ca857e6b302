"""What a :class:`spear.Reconstruction` says, as plain JSON-able facts for reports.

Read through the public fields only; ``diagnosis`` and ``input_status`` are read with
``getattr`` so that results from before and after those fields existed both work.
"""
from __future__ import annotations

from typing import Any

from .report import verdict

#: What each certificate quantity means, shown next to its value in the HTML report.
MEANINGS = {
    "certified": "exact check from the layer's weight and bias alone: True proves the recovered "
                 "inputs are the client's (no ground truth needed)",
    "violations": "entries where a neuron has a gradient although the recovered input makes it "
                  "clearly inactive; 0 for the true batch",
    "violation_rate": "graded check for noisy updates: the worst column's fraction of violated "
                      "entries (0 exact, below 0.15 consistent, 0.3 and more wrong)",
    "checked_fraction": "fraction of the gradient's entries the check could judge",
    "noise_level": "s_(b+1) / s_b of the gradient: ~1e-7 for an exact float32 gradient; larger "
                   "means DP noise or FedAvg drift, and exactness cannot be proven",
    "fit_weight": "||gW - L R|| / ||gW||: part of the weight gradient rank b cannot explain",
    "fit_bias": "||dZ' 1 - gb|| / ||gb||: how well the recovered scales reproduce the bias gradient",
    "directions_found": "independent input directions found, out of the batch size",
}


def facts(rec, *, seconds: float | None = None, time_limit: float | None = None) -> dict[str, Any]:
    """JSON-able summary of one reconstruction: verdict, certificate, fit and diagnosis."""
    cert = rec.certificate
    stats = rec.stats or {}
    found = stats.get("directions_found")
    if found is None and rec.directions is not None:
        found = int(rec.directions.shape[1]) if rec.directions.ndim == 2 else None
    status = getattr(rec, "input_status", None)
    errors = None if cert is None else getattr(cert, "input_errors", None)
    return {
        "batch_size": int(rec.batch_size),
        "verdict": getattr(rec, "verdict", None),
        "complete": bool(rec.complete),
        "certified": None if rec.certified is None else bool(rec.certified),
        "directions_found": found,
        "noise_level": _float(rec.noise_level),
        "violations": None if cert is None else int(cert.violations),
        "violation_rate": None if cert is None else _float(cert.violation_rate),
        "checked_fraction": None if cert is None else _float(cert.checked_fraction),
        "fit_weight": _float(rec.fit.get("weight")) if rec.fit else None,
        "fit_bias": _float(rec.fit.get("bias")) if rec.fit else None,
        "submatrices_sampled": stats.get("samples"),
        "backend": stats.get("backend"),
        "diagnosis": diagnosis(rec, seconds=seconds, time_limit=time_limit),
        "input_status": None if status is None else [_plainish(s) for s in status],
        "input_errors": None if errors is None else [_float(e) for e in errors],
    }


def diagnosis(rec, *, seconds: float | None = None, time_limit: float | None = None) -> str | None:
    """Why a result is not a proven recovery, with numbers (None for a certified one).

    The attack's own ``diagnosis`` when it gives one; otherwise what the public fields show.
    """
    own = getattr(rec, "diagnosis", None)
    if own:
        return str(own)
    if rec.certified:
        return None
    stats = rec.stats or {}
    b = rec.batch_size
    found = stats.get("directions_found")
    if not rec.complete:
        parts = [f"{found if found is not None else '?'} of {b} input directions found"]
        if stats.get("samples") is not None:
            parts.append(f"{stats['samples']:,} submatrices sampled")
        if seconds is not None:
            parts.append(f"{seconds:.1f} s spent" + (f" of a {time_limit:g} s limit" if time_limit else ""))
        text = "; ".join(parts) + "."
        if rec.noise_level is not None and rec.noise_level > 1e-4:
            text += (f" The gradient is noisy (noise level {rec.noise_level:.2g}): DP noise or local "
                     "training blurs the zeros the attack looks for.")
        elif found is not None and found < b:
            text += " A larger --time-limit may find the rest."
        return text
    if rec.certified is None:
        return "complete, but the layer's weight and bias were not given, so nothing was certified."
    cert = rec.certificate
    rate = "" if cert is None else f" (violation rate {cert.violation_rate:.3f})"
    return (f"complete and consistent with the layer{rate}, but the update is noisy (noise level "
            f"{rec.noise_level:.2g}), so exactness cannot be proven: evidence, not proof.")


def certificate_rows(f: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(quantity, value, meaning) rows of the HTML report's certificate table."""
    return [(k, f.get(k), MEANINGS[k]) for k in MEANINGS if k in f]


def verdict_of(f: dict[str, Any], *, what: str = "batch") -> tuple[str, str]:
    return verdict(f["complete"], f["certified"], f.get("violation_rate"), what=what)


def _float(v):
    return None if v is None else float(v)


def _plainish(v):
    return v if isinstance(v, (str, int, float, bool, type(None), dict, list)) else str(v)
