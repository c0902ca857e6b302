"""One backend switch: resolve ``device`` once, then write array code against ``xp``.

``xp`` is numpy on the CPU and CuPy on a GPU; below ``reconstruct`` the same code runs on
either. CuPy is optional and imported only when a GPU path is asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

DEVICES = ("auto", "cpu", "cuda")


def _cupy() -> ModuleType | None:
    try:
        import cupy  # noqa: PLC0415 (optional dependency)
    except Exception:  # ImportError, or a CuPy that finds no CUDA library
        return None
    return cupy


def cuda_available() -> bool:
    """True when the CUDA kernel was built in and a GPU and CuPy are usable."""
    from spear import _core

    if not _core.built_with_cuda or _core.cuda_device_count() < 1:
        return False
    cp = _cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


@dataclass(frozen=True)
class Backend:
    name: str  # "cpu" or "cuda"
    xp: ModuleType

    def asarray(self, a: Any, dtype=None):
        """Any numpy / torch / CuPy array as an ``xp`` array (no copy when possible)."""
        return to_xp(a, self.xp, dtype)

    def to_numpy(self, a) -> np.ndarray:
        return host(a)


def host(a) -> np.ndarray:
    """A numpy array of ``a`` from either side, whatever the backend: a GPU run mixes CuPy
    arrays with numpy ones (the sampler hands back numpy arrays for the host-side search
    factor; the H100 run found ``.get()`` called on one)."""
    if isinstance(a, np.ndarray):
        return a
    return a.get() if hasattr(a, "get") else np.asarray(a)


def resolve(device: str) -> Backend:
    """Pick the backend: 'cpu', 'cuda', or 'auto' (CUDA when it can run, else CPU)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return Backend("cpu", np)
    if device == "cuda":
        if not cuda_available():
            raise ValueError(
                "device='cuda' was requested but the CUDA path cannot run: "
                + _cuda_unavailable_reason())
        return Backend("cuda", _cupy())
    return Backend("cuda", _cupy()) if cuda_available() else Backend("cpu", np)


def _cuda_unavailable_reason() -> str:
    from spear import _core

    if not _core.built_with_cuda:
        return ("spear was built without the CUDA kernel (no nvcc at build time); reinstall "
                "with the CUDA toolkit on PATH and -Ccmake.define.SPEAR_CUDA=ON")
    if _core.cuda_device_count() < 1:
        # no device, no driver, or a driver older than the statically linked CUDA runtime
        return _core.cuda_unavailable_reason() or "no CUDA device or driver was found"
    return "CuPy is not installed or not usable (pip install 'spear[cuda]')"


def to_xp(a: Any, xp: ModuleType, dtype=None):
    """Convert numpy / torch / CuPy / array-likes to an ``xp`` array."""
    if type(a).__module__.startswith("torch"):
        a = a.detach()
        if xp is np or not a.is_cuda:
            a = a.cpu().numpy()
        else:
            # DLPack: zero-copy, and ordered after torch's current stream (CuPy passes its
            # stream to __dlpack__), on the tensor's own device.
            with xp.cuda.Device(a.device.index):
                return xp.asarray(xp.from_dlpack(a), dtype=dtype)
    elif xp is np and hasattr(a, "__cuda_array_interface__"):
        a = a.get()
    return xp.asarray(a, dtype=dtype)
