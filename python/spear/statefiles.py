"""Reading state dicts (weights, gradients, updates) from files, safely.

Update files come from clients and are untrusted: torch files are read with
``torch.load(weights_only=True)``, which builds tensors and plain containers only and
never runs code from the pickle; safetensors files hold no code at all (the format to
recommend). Anything else is refused.
"""
from __future__ import annotations

from pathlib import Path

import torch

TORCH_SUFFIXES = (".pt", ".pth")
SAFETENSORS_SUFFIX = ".safetensors"
SUFFIXES = (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX)


def load_state(path: str | Path, what: str = "file") -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` dict stored in ``path`` (.pt, .pth or .safetensors).

    Raises ValueError with one line for a missing file, another suffix, a torch file that
    needs code to load (a pickled object: refused, not run) or content that is not a flat
    mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{what} {path}: unsupported file type {suffix or '(none)'!r}; "
                         f"use .safetensors (recommended) or a torch state dict (.pt/.pth)")
    if suffix == SAFETENSORS_SUFFIX:
        state = _load_safetensors(path, what)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:     # UnpicklingError, RuntimeError, EOFError, ...: all mean "refused"
            raise ValueError(f"{what} {path} was refused: not a plain tensor file, nothing in it was run "
                             f"(torch.load with weights_only=True: {_reason(e)})") from None
    return _tensor_dict(state, path, what)


def _reason(e: BaseException) -> str:
    """The informative line of torch's multi-line refusal (e.g. 'unsupported GLOBAL posix.system')."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    hit = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), None)
    text = hit or (lines[0] if lines else type(e).__name__)
    return text[:160].rstrip(".")


def _load_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError:
        raise ValueError("reading .safetensors needs the safetensors package (pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ValueError(f"{what} {path} is not a valid safetensors file ({first[:160]})") from None


def _tensor_dict(state, path: Path, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise ValueError(f"{what} {path} holds a {type(state).__name__}, not a state dict of tensors")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{what} {path}: entry {bad[0]!r} is not a tensor (a state dict maps names to "
                         f"tensors; save model.state_dict(), not the model)")
    return dict(state)
