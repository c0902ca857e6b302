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

from .backend import host
from .tolerance import (CERT_ROUNDING, CERT_SIGMAS, CERT_Z_SIGMAS, ERROR_PER_SNR, GRADED_MARGIN,
                        GRADED_SIGMAS,
                        MAX_VIOLATION_RATE, MIN_JUDGED_PER_COLUMN, OUTLIER_FACTOR, RATE_FLOOR,
                        VERIFY_BIAS_FACTOR, VERIFY_FIT_FACTOR, row_noise)

#: The client's forward pass rounds Z in (at least) float32.
Z_EPS = float(np.finfo(np.float32).eps)


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
    input_errors: np.ndarray | None = None   # expected relative error of each input (2 / snr)

    def badness(self) -> tuple[int, float]:
        """Order for comparing candidate sets: exact violations, then the graded rate."""
        return (self.violations, self.violation_rate)


class Certifier:
    """Precomputes what every check of the same layer shares.

    The noise model: entry (k, i) of dZ' = L Q carries noise of std sigma_k * c_i, where
    sigma_k is row k's noise (what rank b leaves of gW) and c_i = ``col_noise(Q)[i]``
    the column's gain (||S^-1/2 q_i|| for L = U S^1/2). Every threshold is in those units,
    so a weak input is judged against its own noise, not against the strong inputs'.
    """

    def __init__(self, xp, L, R, weight, bias, *, sigma_rows, col_noise, exact: bool,
                 eps: float = 0.0):
        """sigma_rows: (m,) noise std of each row of gW (0 on dead rows); col_noise:
        Q -> (b,) noise gain of each column of L Q; exact: the noise is rounding (a set
        can be certified), not additive noise (DP), where at best it is consistent;
        eps: the gradient dtype's machine epsilon (0: no rounding level)."""
        self.xp = xp
        self.L = L                                   # m x b, dead rows exactly zero
        self.WR = weight @ R.T                       # m x b
        self.RRt = R @ R.T                           # b x b
        self.bias = bias
        self.n = R.shape[1]
        self.w_norm = xp.linalg.norm(weight, axis=1)
        self.sigma = sigma_rows
        self.sigma_norm = float(xp.linalg.norm(sigma_rows))
        self.col_noise = col_noise
        self.exact = bool(exact)
        # The rounding level of entry (k, i): eps ||gW_k|| ||X'^+ e_i||, with ||gW_k||^2 =
        # L_k R R^T L_k^T and ||X'^+ e_i||^2 = q_i^T (R R^T)^-1 q_i (X' = Q^-1 R).
        self.eps = float(eps)
        self.g_norm = xp.sqrt(xp.abs(xp.einsum("ij,jk,ik->i", L, self.RRt, L)))
        self.RRt_inv = xp.linalg.pinv(self.RRt) if self.eps else None

    def __call__(self, Q) -> Certificate:
        xp = self.xp
        Qinv = xp.linalg.inv(Q)
        dZ = self.L @ Q                                          # m x b
        Z = self.WR @ Qinv.T + self.bias[:, None]                # m x b
        x_norm = xp.sqrt(xp.abs(xp.einsum("ij,jk,ik->i", Qinv, self.RRt, Qinv)))
        gain = self.col_noise(Q)                                 # (b,)
        noise = self.sigma[:, None] * gain[None, :]              # std of each entry of dZ'
        level = self._rounding_level(Q)                          # 0 without eps
        snr = xp.linalg.norm(dZ, axis=0) / xp.maximum(self.sigma_norm * gain, 1e-300)
        # Z' is off by the input's error (1 / snr relative, spread over n coordinates)
        # plus the client's own float32 rounding of its forward pass.
        margin = CERT_Z_SIGMAS * ((1.0 / snr / np.sqrt(self.n) + Z_EPS)[None, :]
                                  * self.w_norm[:, None] * x_norm[None, :]
                                  + Z_EPS * xp.abs(self.bias)[:, None])
        nonzero = xp.abs(dZ) > xp.maximum(CERT_SIGMAS * noise, level)
        bad = nonzero & (Z < -margin)
        per_col = host(bad.sum(axis=0)).astype(np.int64)
        # Graded: entries past a few sigmas; drift (FedAvg judged with the server's
        # weights) and noise flip the sign of small pre-activations only, a wrong input
        # makes them clearly negative: count Z' below a fraction of the row's typical |Z'|.
        judged = xp.abs(dZ) > xp.maximum(GRADED_SIGMAS * noise, level)
        row_scale = xp.median(xp.abs(Z), axis=1)[:, None]
        wrong = judged & (Z < -xp.maximum(margin, GRADED_MARGIN * row_scale))
        counts = host(judged.sum(axis=0))
        rate = host(wrong.sum(axis=0)) / np.maximum(counts, 1)
        max_rate = float(rate.max()) if rate.size else 0.0
        typical = float(np.median(rate)) if rate.size else 0.0
        enough = counts.size > 0 and int(counts.min()) >= MIN_JUDGED_PER_COLUMN
        consistent = (max_rate <= MAX_VIOLATION_RATE
                      and max_rate <= OUTLIER_FACTOR * (typical + RATE_FLOOR) and enough)
        return Certificate(bool(per_col.sum() == 0 and self.exact and enough), int(per_col.sum()),
                           per_col, float(host(nonzero.mean())),
                           violation_rate=max_rate, consistent=consistent, column_rates=rate,
                           column_judged=counts.astype(np.int64),
                           input_errors=ERROR_PER_SNR / host(snr))

    def _rounding_level(self, Q):
        """Below CERT_ROUNDING eps ||gW_k|| ||X'^+ e_i|| an entry of dZ' is rounding: the
        client's float32 rounding of gW correlates with its inputs, so its part inside
        their span is far larger than the isotropic noise model says (see CERT_ROUNDING)."""
        xp = self.xp
        if not self.eps:
            return xp.zeros((1, 1))
        xplus = xp.sqrt(xp.abs(xp.einsum("ji,jk,ki->i", Q, self.RRt_inv, Q)))
        return CERT_ROUNDING * self.eps * self.g_norm[:, None] * xplus[None, :]


def verify(grad_weight, grad_bias, weight, bias, inputs, *, device: str = "auto") -> Certificate:
    """Certify any candidate batch ``inputs`` (b x n) against a layer's gradients, with no
    ground truth: the gradient must be explained as dZ' X' with dZ' = gW X'^T (X' X'^T)^-1,
    dZ' 1 must give grad_bias, and dZ' must be zero wherever W X' + bias is negative.
    """
    from . import backend as _backend
    from . import validate
    from .decompose import evident_rank, leading_spectrum, relative_noise
    from .tolerance import is_exact

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
    shown, spectrum = None, None
    if b < min(m, n):
        spectrum = leading_spectrum(xp, gW, b + 1)[3]
        noise = relative_noise(spectrum, b)
        shown = evident_rank(spectrum, (m, n), dtype).rank
    else:
        noise = float(np.finfo(np.float64).eps)
    pinv = xp.linalg.solve(X @ X.T, X)                                # b x n, rows of X^+T
    dZ = (pinv @ gW.T).T                                              # m x b
    resid = gW - dZ @ X
    scale = float(xp.linalg.norm(gW))
    residual = float(xp.linalg.norm(resid)) / scale
    bias_residual = float(xp.linalg.norm(dZ.sum(axis=1) - gb)) / max(float(xp.linalg.norm(gb)), 1e-300)
    live = xp.abs(gW).sum(axis=1) > 0
    dZ = dZ * live[:, None]
    # Noise of row k of gW reaches column j of dZ' scaled by ||X^+_j||.
    sigma = row_noise(xp, xp.linalg.norm(resid, axis=1), live, n, b, float(xp.linalg.norm(gW, ord=2)) if b else 0.0)
    cert = Certifier(xp, dZ, X, W, Bv, sigma_rows=sigma,
                     col_noise=lambda Q: xp.linalg.norm(pinv.T @ Q, axis=0),
                     exact=spectrum is None or is_exact(spectrum, b, scale),
                     eps=float(np.finfo(dtype).eps))(xp.eye(b))
    ok_fit = (residual <= VERIFY_FIT_FACTOR * noise
              and bias_residual <= VERIFY_FIT_FACTOR * noise * VERIFY_BIAS_FACTOR)
    cert.certified = bool(cert.certified and ok_fit)
    cert.residual, cert.bias_residual = residual, bias_residual
    if shown is not None and shown > b:
        # The gradient shows more inputs than the candidate has: whatever its signs say,
        # it does not explain the update (e.g. 15 of 16 true inputs).
        cert.certified = cert.consistent = False
    return cert
