"""The output folder of a run: one run per folder, so a report never mixes two runs."""
from __future__ import annotations

import shutil
import time
from pathlib import Path


def prepare(out: str | None, prefix: str, *, overwrite: bool = False) -> Path:
    """Create (or, with ``overwrite``, empty) the folder a run writes into.

    ``out=None`` picks a new ``<prefix>-<time>`` folder. An existing non-empty folder is
    refused unless ``overwrite``; a path that is a file is always refused. Raises
    ValueError with one line naming the path.
    """
    path = Path(out) if out else Path(f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}")
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a folder")
    if path.is_dir() and any(path.iterdir()):
        if not overwrite:
            raise ValueError(f"--out {path} is not empty (add --overwrite to empty it first)")
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create --out {path}: {e.strerror}") from None
    return path
