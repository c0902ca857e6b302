"""Certificate: check a reconstruction against the layer without any ground truth.

The server knows W and bias, so it can recompute the pre-activations Z' = W X' + bias of
the reconstructed inputs. For the true batch, dZ = L Q is zero wherever the neuron was
inactive, i.e. no entry has both a non-zero gradient and Z' clearly below zero. A wrong
direction makes a column of L Q dense and its input's Z' negative in about half the rows,
so even one wrong column shows up as many violations.

With X' = Q^-1 R, Z' = (W R^T) Q^-T + bias, so after precomputing W R^T (m x b) and R R^T
(b x b) a check costs O(m b^2) whatever the input size n: the selection can afford to try
many alternative sets.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tolerance import (GRADED_MARGIN, GRADED_REL_CAP, MAX_JUDGED_REL, MAX_VIOLATION_RATE,
                        MIN_JUDGED_PER_COLUMN, NOISE_SIGMAS, OUTLIER_FACTOR, RATE_FLOOR, VERIFY_BIAS_FACTOR,
                        VERIFY_FIT_FACTOR, certificate_rel)


@dataclass
class Certificate:
    certified: bool
    violations: int                  # entries with non-zero gradient and clearly negative Z'
    per_column: np.ndarray           # violations of each reconstructed input
    checked_fraction: float          # fraction of entries with a non-zero gradient
    residual: float = 0.0            # ||gW - dZ' X'|| / ||gW|| (verify only)
    bias_residual: float = 0.0       # ||dZ' 1 - gb|| / ||gb|| (verify only)
    #: Graded verdict for noisy updates: the largest fraction of a column's judged entries
    #: that violate the sign rule. A wrong direction scores ~0.5, the true batch under DP
    #: noise a few in a thousand, under FedAvg drift up to ~0.1.
    violation_rate: float = 0.0
    consistent: bool = False         # low violation rate, and no column standing out
    column_rates: np.ndarray | None = None   # the graded rate of each column
    column_judged: np.ndarray | None = None  # entries the graded check judged, per column

    def badness(self) -> tuple[int, float]:
        """Order for comparing candidate sets: exact violations, then the graded rate."""
        return (self.violations, self.violation_rate)


class Certifier:
    """Precomputes what every check of the same layer shares."""

    def __init__(self, xp, L, R, weight, bias, noise_rel: float, noise_floor: float = 0.0):
        """noise_rel: relative noise of L (rounding); noise_floor: standard deviation of
        additive noise in L q for a unit q (:func:`decompose.noise_scale`)."""
        self.xp = xp
        self.L = L                                   # m x b, dead rows exactly zero
        self.WR = weight @ R.T                       # m x b
        self.RRt = R @ R.T                           # b x b
        self.bias = bias
        self.w_norm = xp.linalg.norm(weight, axis=1)
        self.l_norm = xp.linalg.norm(L, axis=1)
        # Entries within this relative distance of zero are not judged (rounding).
        self.rel = certificate_rel(noise_rel)
        # Past this, "zero" and "clearly negative" lose their meaning and every set would
        # pass: noise (DP, FedAvg) has destroyed what could be certified, so nothing is.
        self.meaningful = self.rel <= MAX_JUDGED_REL
        # The graded check judges at a capped relative margin, plus the additive noise
        # floor: it stays informative where the exact one has to give up.
        self.rel_graded = min(self.rel, GRADED_REL_CAP)
        self.floor = NOISE_SIGMAS * xp.asarray(noise_floor, dtype=xp.float64)   # scalar or (b,)

    def __call__(self, Q) -> Certificate:
        xp = self.xp
        Qinv = xp.linalg.inv(Q)
        dZ = self.L @ Q                                          # m x b
        Z = self.WR @ Qinv.T + self.bias[:, None]                # m x b
        x_norm = xp.sqrt(xp.abs(xp.einsum("ij,jk,ik->i", Qinv, self.RRt, Qinv)))
        grad_scale = self.l_norm[:, None] * xp.linalg.norm(Q, axis=0)[None, :]
        z_scale = self.w_norm[:, None] * x_norm[None, :] + xp.abs(self.bias)[:, None]
        nonzero = xp.abs(dZ) > self.rel * grad_scale
        bad = nonzero & (Z < -self.rel * z_scale)
        per_col = _np(xp, bad.sum(axis=0)).astype(np.int64)
        # Graded: the same rule with the noise floor on dZ and a capped relative margin.
        judged = xp.abs(dZ) > xp.maximum(self.rel_graded * grad_scale,
                                         (self.floor * xp.linalg.norm(Q, axis=0))[None, :])
        # Drift (FedAvg judged with the server's weights) and noise flip the sign of small
        # pre-activations only; a wrong input makes them clearly negative. So the graded
        # check counts Z' below a fraction of the row's typical |Z'|.
        row_scale = xp.median(xp.abs(Z), axis=1)[:, None]
        wrong = judged & (Z < -xp.maximum(self.rel_graded * z_scale, GRADED_MARGIN * row_scale))
        counts = _np(xp, judged.sum(axis=0))
        rate = _np(xp, wrong.sum(axis=0)) / np.maximum(counts, 1)
        max_rate = float(rate.max()) if rate.size else 0.0
        typical = float(np.median(rate)) if rate.size else 0.0
        consistent = (max_rate <= MAX_VIOLATION_RATE
                      and max_rate <= OUTLIER_FACTOR * (typical + RATE_FLOOR)
                      and counts.size > 0 and int(counts.min()) >= MIN_JUDGED_PER_COLUMN)
        return Certificate(bool(per_col.sum() == 0 and self.meaningful), int(per_col.sum()),
                           per_col, float(_np(xp, nonzero.mean())),
                           violation_rate=max_rate, consistent=consistent, column_rates=rate,
                           column_judged=counts.astype(np.int64))


def _np(xp, a):
    return a.get() if xp is not np else np.asarray(a)


def verify(grad_weight, grad_bias, weight, bias, inputs, *, device: str = "auto") -> Certificate:
    """Certify any candidate batch ``inputs`` (b x n) against a layer's gradients, with no
    ground truth: the gradient must be explained as dZ' X' with dZ' = gW X'^T (X' X'^T)^-1,
    dZ' 1 must give grad_bias, and dZ' must be zero wherever W X' + bias is negative.
    """
    from . import backend as _backend
    from . import validate
    from .decompose import evident_rank, leading_spectrum, noise_std, relative_noise

    m, n, dtype = validate.check_gradients(grad_weight, grad_bias)
    validate.check_layer(weight, bias, m, n)
    if weight is None:
        raise ValueError("verify needs the layer's weight and bias")
    be = _backend.resolve(device)
    xp = be.xp
    gW, gb = be.asarray(grad_weight, xp.float64), be.asarray(grad_bias, xp.float64)
    W, Bv = be.asarray(weight, xp.float64), be.asarray(bias, xp.float64)
    X = be.asarray(inputs, xp.float64)
    if X.ndim != 2 or X.shape[1] != n:
        raise ValueError(f"inputs must have shape (b, {n}), got {tuple(X.shape)}")
    for a, what in ((gW, "grad_weight"), (gb, "grad_bias"), (W, "weight"), (Bv, "bias"),
                    (X, "inputs")):
        validate.check_finite(xp, a, what)
    b = X.shape[0]
    sigma, shown = 0.0, None
    if b < min(m, n):
        spectrum = leading_spectrum(xp, gW, b + 1)[3]
        noise, sigma = relative_noise(spectrum, b), noise_std(spectrum, b, m, n)
        shown = evident_rank(spectrum, (m, n), dtype).rank
    else:
        noise = float(np.finfo(np.float64).eps)
    pinv = xp.linalg.solve(X @ X.T, X)                                # b x n, rows of X^+T
    dZ = (pinv @ gW.T).T                                              # m x b
    scale = float(xp.linalg.norm(gW))
    residual = float(xp.linalg.norm(gW - dZ @ X)) / scale
    bias_residual = float(xp.linalg.norm(dZ.sum(axis=1) - gb)) / max(float(xp.linalg.norm(gb)), 1e-300)
    live = xp.abs(gW).sum(axis=1) > 0
    dZ = dZ * live[:, None]
    # Additive noise of std sigma in gW reaches column j of dZ scaled by ||X^+_j||.
    floor = sigma * xp.linalg.norm(pinv, axis=1)
    cert = Certifier(xp, dZ, X, W, Bv, noise, floor)(xp.eye(b))
    ok_fit = (residual <= VERIFY_FIT_FACTOR * noise
              and bias_residual <= VERIFY_FIT_FACTOR * noise * VERIFY_BIAS_FACTOR)
    cert.certified = bool(cert.certified and ok_fit)
    cert.residual, cert.bias_residual = residual, bias_residual
    if shown is not None and shown > b:
        # The gradient shows more inputs than the candidate has: whatever its signs say,
        # it does not explain the update (e.g. 15 of 16 true inputs).
        cert.certified = cert.consistent = False
    return cert
