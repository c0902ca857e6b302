"""Shared pytest fixtures.

Real datasets live outside the repository (``../shared/datasets`` next to the checkout,
or wherever ``SPEAR_DATASETS`` points). Tests that need them take the ``datasets_root``
fixture and are skipped when the folder is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _datasets_root() -> Path | None:
    env = os.environ.get("SPEAR_DATASETS")
    root = Path(env) if env else REPO.parent / "shared" / "datasets"
    return root if root.is_dir() else None


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    root = _datasets_root()
    if root is None:
        pytest.skip("real datasets not found (set SPEAR_DATASETS or provide ../shared/datasets)")
    return root
