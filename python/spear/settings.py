"""Every setting of a run declared once: a dataclass field carries its default, choices
and help, and the command line, ``summary.json`` and the benchmarks are generated from it.

>>> @dataclass
... class Run:
...     width: int = setting(200, "neurons per hidden layer (m)")
>>> p = argparse.ArgumentParser(); add_arguments(p, Run)
>>> from_args(Run, p.parse_args(["--width", "50"])).width
50

Metadata keys: ``help``, ``choices``, ``flag`` (default ``--field-name``), ``parse`` (a
function turning the command-line text into the value, e.g. a comma list), ``negate``
(a ``store_true`` flag that sets a True-by-default boolean to False) and ``cli=False``
(a setting the command line does not expose), ``bare`` (the value of the flag given
without one, e.g. ``--ray`` alone).
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, Iterable, Sequence

from .attack.backend import DEVICES
from .attack.reconstruct import METHODS as SEARCHES

__all__ = ["DEVICES", "SEARCHES", "AttackBudget", "add_arguments", "comma_ints", "defaults",
           "from_args", "setting"]


def setting(default: Any, help: str, *, choices: Sequence[Any] | None = None, flag: str | None = None,
            parse: Callable[[str], Any] | None = None, negate: str | None = None, cli: bool = True,
            metavar: str | None = None, required: bool = False, many: bool = False, bare: Any = None) -> Any:
    """A dataclass field whose metadata describes its command-line option.

    ``required``: the command line must give it; ``many``: the option may be repeated and
    takes several values each time (collected into a tuple); ``bare``: the flag may be given
    without a value, which then means ``bare``.
    """
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "flag": flag,
            "parse": parse, "negate": negate, "cli": cli, "metavar": metavar, "required": required,
            "many": many, "bare": bare}
    return field(default=default, metadata=meta)


def comma_ints(text: str) -> tuple[int, ...]:
    """``"16,32"`` -> ``(16, 32)``: positive integers (argparse reports the error)."""
    try:
        values = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def add_arguments(parser: argparse.ArgumentParser, cls: type, *, only: Iterable[str] | None = None,
                  skip: Iterable[str] = (), overrides: dict[str, Any] | None = None) -> None:
    """One option per command-line field of dataclass ``cls`` (help shows the default).

    ``only`` / ``skip`` select fields; ``overrides`` replaces defaults (a benchmark's own
    longer time limit, the demo's smaller batch), written where that choice is made.
    """
    overrides = overrides or {}
    only = None if only is None else set(only)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"{cls.__name__} has no settings {sorted(unknown)}")
    own = cls.__dict__.get("__annotations__", {})
    # The class's own settings first, the shared ones (e.g. AttackBudget) after them.
    for f in sorted(dataclasses.fields(cls), key=lambda f: f.name not in own):
        meta = f.metadata
        if not meta.get("cli", False) or f.name in skip or (only is not None and f.name not in only):
            continue
        default = overrides.get(f.name, f.default)
        if meta.get("negate"):
            parser.add_argument(meta["negate"], dest=f.name, action="store_false", default=default,
                                help=meta["help"])
            continue
        if isinstance(default, bool) or f.type in ("bool", bool):
            parser.add_argument(_flag(f), dest=f.name, action="store_true", default=default, help=meta["help"])
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "default": default, "metavar": meta.get("metavar")}
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
            kwargs["metavar"] = kwargs["metavar"] or "{" + ",".join(map(str, meta["choices"])) + "}"
        kwargs["type"] = meta.get("parse") or _scalar_type(f, default)
        if meta.get("required"):
            kwargs.update(required=True, default=None, help=f"{meta['help']} (required)")
        else:
            kwargs["help"] = f"{meta['help']} (default: {_shown(default)})"
        if meta.get("many"):
            kwargs.update(action="extend", nargs="+", type=meta.get("parse") or str)
        if meta.get("bare") is not None:
            kwargs.update(nargs="?", const=meta["bare"])
        parser.add_argument(_flag(f), **kwargs)


def _scalar_type(f: dataclasses.Field, default: Any) -> Callable[[str], Any]:
    text = str(f.type)
    if "float" in text:
        return float
    if "int" in text:
        return int
    return type(default) if default is not None else str


def from_args(cls: type, args: argparse.Namespace, base: dict[str, Any] | None = None):
    """An instance of ``cls`` from parsed options; fields the parser lacks come from
    ``base`` (a preset such as the demo's), else keep their defaults."""
    parsed = {f.name: _frozen(getattr(args, f.name)) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**(base or {}), **parsed})


def _frozen(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def defaults(cls: type) -> dict[str, Any]:
    """Field name -> default of a settings dataclass."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not MISSING}


@dataclass
class AttackBudget:
    """How ``spear.reconstruct`` runs: shared by ``spear attack``, ``spear audit`` and the benchmarks."""

    device: str = setting("auto", "where the attack runs (auto: CUDA when available)", choices=DEVICES)
    seed: int = setting(0, "random seed of the attack's sampler (simulated runs: also of the model "
                         "and the client's batches)")
    max_samples: int | None = setting(None, "sampling budget per batch (none: until the time limit)")
    time_limit: float | None = setting(300.0, "seconds per batch before giving up")
    search: str = setting("auto", "where SPEAR's directions come from: the sampler, sparse dictionary "
                          "recovery, or both", choices=SEARCHES)
