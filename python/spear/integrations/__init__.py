"""Bridges to the federated-learning stacks auditors run: Flower (``flower``), Opacus DP-SGD
clients (``opacus``) and Ray for many attacks at once (``ray_tasks``).

Each needs its optional extra (``pip install "spear[flower]"``, ``"spear[opacus]"``,
``"spear[ray]"``) and imports it only when used, so ``import spear`` works without them.
"""
from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional dependency, or raise one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"{what} needs {module!r} ({e}): pip install -c constraints.txt \".[{extra}]\"") from None
