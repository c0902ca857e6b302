"""Verdicts and diagnoses: every result says what it is and, when it is less than a
proof, why, with the numbers.

Verdicts, strongest first:

- ``certified``: b directions, and the certificate proves the batch exact.
- ``consistent``: b directions, the graded certificate check passes; evidence, not proof
  (noise or rounding keeps the exact check from judging).
- ``unverified``: b directions, but nothing was checked (no weight and bias given).
- ``rejected``: b directions, and the certificate rejects the set.
- ``incomplete``: fewer than b independent directions were found.
- ``partial``: the gradient shows fewer inputs than the batch size asked for (the rest lie
  below the level of rounding or noise: nobody can recover them); the inputs it shows
  are certified or consistent. Or: the certificate rejects the set, and the inputs whose
  columns break no sign rule come back (consistent), the rest named as rejected.

Only ``certified`` and ``consistent`` count as complete.
"""
from __future__ import annotations

import numpy as np

from .budget import Budget
from .kernel import SAMPLER_REACH, expected_samples
from .tolerance import MAX_VIOLATION_RATE, WEAK_FACTOR

VERDICTS = ("certified", "consistent", "partial", "unverified", "rejected", "incomplete")
#: Live neurons per input down to which the dictionary source was measured to recover
#: whole batches (b = 100 at m = 2000 zero-mean, float32: 3 of 3 in 30-105 s; b = 128 at
#: m = 2000, 15.6 per input: exact in 298 s, 115-125 of 128 directions in 60 s).
DICTIONARY_WIDTH_PER_INPUT = 15


def verdict_of(selection, has_layer: bool, partial: bool = False) -> str:
    if selection is None:
        return "incomplete"
    cert = selection.certificate
    if not has_layer or cert is None:
        return "unverified"
    if not (cert.certified or cert.consistent):
        return "rejected"
    if partial:
        return "partial"
    return "certified" if cert.certified else "consistent"


def diagnose(problem, outcome, budget: Budget, verdict: str) -> str | None:
    """Why a result is less than certified, in one paragraph with numbers (None when
    certified)."""
    if verdict == "certified":
        return None
    b, found = problem.b, outcome.found
    parts = []
    if verdict == "unverified":
        parts.append("nothing was checked: weight and bias were not given, so the b inputs "
                     "only fit the gradient, and a wrong set can fit it as well (measured: "
                     "all-positive inputs, b = 16, wrong in 6 of 6 seeds with fit ~1e-7)")
    elif verdict == "rejected":
        cert = outcome.selection.certificate
        parts.append(f"the certificate rejects the set: worst column violation rate "
                     f"{cert.violation_rate:.3g} (consistent up to {MAX_VIOLATION_RATE}), "
                     f"{cert.violations} exact sign violations")
    elif verdict == "partial":
        parts.append(_partial_note(problem, outcome.selection.certificate))
    elif verdict == "consistent":
        from .finish import suspect_columns

        cert = outcome.selection.certificate
        suspect = int(np.count_nonzero(suspect_columns(cert)))
        parts.append("consistent, not certified: the graded check passes (worst column "
                     f"violation rate {cert.violation_rate:.3g}), the exact one finds "
                     f"{cert.violations} sign violations"
                     + (f"; {suspect} input(s) suspect: their columns break the sign rule "
                        "where the others do not (a wrong direction looks like this; so "
                        "can FedAvg drift)" if suspect else ""))
    else:
        parts.append(f"{found} of {b} directions found")
    if verdict in ("incomplete", "rejected"):
        parts.append(_budget_note(budget, outcome))
    notes = [_noise_note(problem), _rounding_note(problem)]
    if verdict in ("incomplete", "rejected"):
        notes.append(_width_note(problem, outcome))
    parts += [note for note in notes if note]
    return "; ".join(parts) + "."


def _budget_note(budget: Budget, outcome) -> str:
    spent = f"{budget.elapsed():.1f} s and {budget.samples:.3g} samples"
    limits = []
    if budget.time_limit is not None:
        limits.append(f"time_limit {budget.time_limit:g} s")
    if budget.max_samples is not None:
        limits.append(f"max_samples {budget.max_samples:.3g}")
    if outcome.exhausted:
        return f"every source ran out of proposals after {spent}"
    return f"budget spent: {spent} ({', '.join(limits)})"


def _partial_note(problem, cert) -> str:
    cert_word = "certified" if cert.certified else "consistent, not certified"
    return (f"{problem.b} of {problem.requested} inputs recovered ({cert_word}); the other "
            f"{problem.requested - problem.b} lie below the level of rounding or noise in the "
            f"gradient ({problem.rank.describe(problem.spectrum)}): their share of grad_weight "
            "is lost, nobody can recover them from this update")


def _noise_note(problem) -> str | None:
    if problem.exact:
        return None
    t = problem.tolerances
    return (f"noise: the gradient carries additive noise (DP, or an update that is no "
            f"gradient) at {t.noise_rel:.2g} of the weakest direction (s_b+1 / s_b); "
            "exactness cannot be proven, the graded check judges instead")


def _rounding_note(problem) -> str | None:
    """Directions whose singular value is within 1000x of the spectrum's level (rounding
    or noise): at the limit of what any attack can recover from this gradient."""
    s = np.asarray(problem.spectrum[:problem.b], dtype=np.float64)
    level = problem.rank.level
    weak = int(np.sum(s < WEAK_FACTOR * level))
    if weak == 0:
        return None
    return (f"rounding: {weak} of {problem.b} singular values lie within {WEAK_FACTOR:g}x of "
            f"the level no input reaches ({level:.2g}); the smallest is {s[-1] / level:.3g}x "
            "above it, and its input is recovered less accurately")


def _width_note(problem, outcome) -> str | None:
    b, rows = problem.b, int(problem.live.sum())
    notes = []
    if outcome.zero_fraction is not None and b > 1:
        rho = outcome.zero_fraction
        need = expected_samples(b, rho)
        if need > SAMPLER_REACH:
            notes.append(f"the sampler needs ~{need:.2g} samples at b = {b} (zero fraction "
                         f"{rho:.2f} per column)")
    if rows < DICTIONARY_WIDTH_PER_INPUT * b:
        notes.append(f"{rows} live neurons for b = {b} inputs ({rows / b:.1f} per input; the "
                     f"dictionary source was measured to reach {DICTIONARY_WIDTH_PER_INPUT} per input)")
    return "b against m: " + ", ".join(notes) if notes else None
