"""Scale and sign of each direction from the bias gradient.

dZ = L Q and gb = dZ 1, so with unit columns Q' the scales c solve L Q' c = gb; then
Q = Q' diag(c) and the inputs are the rows of X^T = Q^-1 R.
"""
from __future__ import annotations


def scales(xp, L, Qunit, grad_bias):
    """Least-squares c with L Qunit c = grad_bias (exact when gb lies in range(L))."""
    c, *_ = xp.linalg.lstsq(L @ Qunit, grad_bias, rcond=None)
    return c
