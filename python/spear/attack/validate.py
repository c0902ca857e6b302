"""Input checks with errors that name the problem (never a crash or a silent wrong answer)."""
from __future__ import annotations

from typing import Any

import numpy as np

SUPPORTED_DTYPES = (np.float32, np.float64)


def _dtype_of(a: Any) -> np.dtype:
    dt = getattr(a, "dtype", None)
    if dt is None:
        raise TypeError(f"expected an array (numpy, torch or CuPy), got {type(a).__name__}")
    if type(a).__module__.startswith("torch"):
        name = str(dt).replace("torch.", "")
        try:
            return np.dtype(name)
        except TypeError:
            raise TypeError(f"unsupported dtype {dt}; use float32 or float64") from None
    return np.dtype(dt)


def check_float_dtype(a: Any, what: str) -> np.dtype:
    dt = _dtype_of(a)
    if dt not in [np.dtype(d) for d in SUPPORTED_DTYPES]:
        raise TypeError(f"{what} has dtype {dt}; only float32 and float64 are supported")
    return dt


def check_gradients(grad_weight, grad_bias) -> tuple[int, int, np.dtype]:
    """Shapes and dtypes of the layer gradients; returns (m, n, dtype)."""
    dw = check_float_dtype(grad_weight, "grad_weight")
    check_float_dtype(grad_bias, "grad_bias")
    if len(grad_weight.shape) != 2:
        raise ValueError(f"grad_weight must be 2-D (m x n), got shape {tuple(grad_weight.shape)}")
    m, n = (int(s) for s in grad_weight.shape)
    if m == 0 or n == 0:
        raise ValueError(f"grad_weight is empty (shape {(m, n)})")
    if tuple(grad_bias.shape) != (m,):
        raise ValueError(
            f"grad_bias must have shape ({m},) to match grad_weight {(m, n)}, "
            f"got {tuple(grad_bias.shape)}")
    return m, n, dw


def check_layer(weight, bias, m: int, n: int) -> None:
    if (weight is None) != (bias is None):
        raise ValueError("give both weight and bias of the layer (for the certificate), or neither")
    if weight is None:
        return
    check_float_dtype(weight, "weight")
    check_float_dtype(bias, "bias")
    if tuple(weight.shape) != (m, n):
        raise ValueError(f"weight must have shape {(m, n)} like grad_weight, got {tuple(weight.shape)}")
    if tuple(bias.shape) != (m,):
        raise ValueError(f"bias must have shape ({m},), got {tuple(bias.shape)}")


def check_finite(xp, a, what: str) -> None:
    if not bool(xp.isfinite(a).all()):
        raise ValueError(f"{what} contains NaN or Inf")


def check_batch_size(batch_size, m: int, n: int) -> None:
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an int or None, got {type(batch_size).__name__}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size > min(m, n):
        raise ValueError(
            f"batch_size {batch_size} is larger than min(m, n) = {min(m, n)}: a {m} x {n} "
            "gradient cannot come from that many inputs with a recoverable rank")
