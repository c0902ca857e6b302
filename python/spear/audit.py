"""``spear audit``: attack an auditor's own model with the client updates they captured.

Inputs: a model architecture (``MODULE:FACTORY``), the global weights the server sent,
and one or more client updates (gradients, or the client's new weights), as .pt/.pth or
.safetensors files. Every ``nn.Linear`` that feeds a ReLU is attacked with
``spear.reconstruct`` and a report is written per update.

No dataset or client-simulation code here: what is attacked is only what a server holds.
One (update, layer) attack is :func:`attack_layer`, a plain function of a picklable
:class:`LayerJob` returning a JSON-able dict, so that it can be fanned out (Ray, a Flower
strategy) without the rest of this module.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from . import __version__, findings, outdir, report
from .fl import attackable_layer, layer_payload, linear_layers
from .settings import AttackBudget, comma_ints, setting
from .statefiles import SUFFIXES, load_state

UPDATE_KINDS = ("gradient", "weights")

DEFINITIONS = {
    "inputs": "path, relative to this summary.json, of a .npy with the recovered inputs of the layer "
              "(one row per input, arbitrary order), or null when the batch was not recovered",
    "certified": "exact certificate from the layer's weight and bias alone: true proves the rows are "
                 "the inputs the client's batch fed to this layer",
    "violation_rate": "graded certificate: 0 exact, below 0.15 consistent with a noisy update, 0.3+ wrong",
    "noise_level": "s_(b+1) / s_b of the update: ~1e-7 for an exact float32 gradient, more under noise",
    "submatrices_sampled": "random (b-1) x b submatrices the sampler evaluated",
    "update_kind": "gradient: the update is the client's gradient (FedSGD); weights: the client's new "
                   "weights, attacked as global - new (one local SGD step: lr times the gradient)",
    "device": "where the attack ran: cpu or cuda",
}


@dataclass
class AuditConfig(AttackBudget):
    """Settings of ``spear audit`` (written into each summary.json)."""

    model: str = setting(None, "MODULE:FACTORY, an importable callable returning the nn.Module "
                         "(MODULE may also be a path to a .py file)", required=True)
    weights: str = setting(None, "the global weights the server sent: a state dict (.safetensors, .pt, .pth)",
                           required=True)
    update: tuple[str, ...] = setting((), "client update file(s) or a folder of them (.safetensors, .pt, "
                                      ".pth); may be repeated", required=True, many=True)
    update_kind: str = setting("gradient", "gradient: the client sent gradients (FedSGD); weights: the "
                               "client's new weights (attacked as their difference from --weights)",
                               choices=UPDATE_KINDS)
    layer: str | None = setting(None, "attack only this nn.Linear, by module name, e.g. 'fc1' or '0' "
                                "(none: every Linear that feeds a ReLU)")
    batch_size: int | None = setting(None, "the client's batch size b (none: inferred from the update)")
    input_shape: tuple[int, ...] | None = setting(None, "C,H,W of one model input: renders the first "
                                                  "layer's recovered inputs as images (else a CSV)",
                                                  parse=comma_ints)
    ray: str | None = setting(None, "run one Ray task per (update, layer): --ray alone starts a local Ray "
                              "instance, --ray ADDRESS joins a running cluster (e.g. auto, or HOST:6379); "
                              "needs the ray extra", bare="local", metavar="ADDRESS")


# --- loading ----------------------------------------------------------------------------

def load_model(spec: str) -> nn.Module:
    """Call ``FACTORY`` of ``MODULE`` (importable name or a .py path) and check it is an nn.Module."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--model must be MODULE:FACTORY (e.g. mypackage.models:make_net), got {spec!r}")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise ValueError(f"--model: {path} does not exist")
        mod_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            raise ValueError(f"--model: importing {path} failed: {type(e).__name__}: {e}") from None
    else:
        if "" not in sys.path and str(Path.cwd()) not in sys.path:
            sys.path.insert(0, str(Path.cwd()))   # the console script does not see the working folder
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ValueError(f"--model: cannot import {module_name!r}: {e}") from None
    factory: Any = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ValueError(f"--model: {module_name!r} has no attribute {attr!r}")
    try:
        model = factory()
    except Exception as e:
        raise ValueError(f"--model: calling {spec} failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model: {spec} returned a {type(model).__name__}, not a torch nn.Module")
    return model.eval()


def load_global_weights(model: nn.Module, path: str | Path) -> None:
    """Load the server's weights into ``model``, refusing missing, extra or misshapen keys."""
    state = load_state(path, "global weights")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        what = f"lack {_few(missing)} the model has" if missing else f"have {_few(extra)} the model lacks"
        raise ValueError(f"global weights {path} {what}: do they belong to this model?")
    for k, v in own.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise ValueError(f"global weights {path}: {k!r} has shape {tuple(state[k].shape)}, the model "
                             f"expects {tuple(v.shape)}")
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in own.items()})


def update_files(paths: Sequence[str]) -> list[Path]:
    """The update files named: files as given, folders expanded to their supported files."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise ValueError(f"--update folder {p} holds no {'/'.join(SUFFIXES)} file")
            files += found
        elif p.exists():
            files.append(p)
        else:
            raise ValueError(f"--update {p} does not exist")
    return files


def _few(keys: list[str]) -> str:
    more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    return f"key {keys[0]!r}{more}"


# --- which layers -----------------------------------------------------------------------

def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def example_inputs(model: nn.Module, input_shape: Sequence[int] | None) -> torch.Tensor | None:
    """A small input the model accepts, for the hook-based ReLU check (None if unknown).

    Tries ``(2, *input_shape)`` and the flattened ``(2, prod(input_shape))``; without a
    shape, ``(2, in_features)`` of the first Linear when the model starts with one.
    """
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = param.dtype if param is not None else torch.float32
    shapes = []
    if input_shape:
        shapes += [(2, *input_shape), (2, int(np.prod(input_shape)))]
    else:
        first = next((m for m in model.modules() if next(m.parameters(recurse=False), None) is not None), None)
        if isinstance(first, nn.Linear):
            shapes.append((2, first.in_features))
    for shape in shapes:
        x = torch.zeros(shape, dtype=dtype)
        try:
            with torch.no_grad():
                model(x)
            return x
        except Exception:
            continue
    return None


def attackable_layers(model: nn.Module, input_shape: Sequence[int] | None = None,
                      only: str | None = None) -> list[tuple[int, str]]:
    """(index among the model's nn.Linear, module name) of each Linear feeding a ReLU.

    ``only``: just that module name (an error names why it cannot be attacked).
    Raises ValueError with one line when nothing can be attacked.
    """
    names = _module_names(model)
    layers = [(i, names[id(layer)]) for i, layer in enumerate(linear_layers(model))]
    if not layers:
        raise ValueError("the model has no nn.Linear layer: nothing SPEAR can attack")
    if only is not None:
        chosen = [(i, n) for i, n in layers if n == only]
        if not chosen:
            raise ValueError(f"--layer {only!r} is not an nn.Linear of the model; its Linear layers: "
                             f"{', '.join(n for _, n in layers)}")
        layers = chosen
    x = example_inputs(model, input_shape)
    found, reasons = [], []
    for i, name in layers:
        try:
            attackable_layer(model, i, example_input=x)
            found.append((i, name))
        except ValueError as e:
            reasons.append(f"{name}: {e}")
    if not found:
        hint = "" if x is not None else " (give --input-shape so forward hooks can check the model)"
        raise ValueError(f"no attackable layer (an nn.Linear whose output enters an nn.ReLU){hint}; "
                         + (reasons[0] if len(reasons) == 1 else f"{len(reasons)} Linear layers checked, "
                            f"e.g. {reasons[0]}"))
    return found


# --- one job ----------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerJob:
    """One (update, layer) attack: plain arrays and settings, picklable."""

    update: str                        # a label for reports (the update file)
    layer: str                         # the Linear's module name
    grad_weight: np.ndarray            # (m, n): gradient, or an update scaled like one
    grad_bias: np.ndarray              # (m,)
    weight: np.ndarray                 # (m, n): the global weights the server sent
    bias: np.ndarray                   # (m,)
    batch_size: int | None = None
    budget: dict = dataclasses.field(default_factory=lambda: asdict(AttackBudget()))


def attack_layer(job: LayerJob) -> dict[str, Any]:
    """Run ``spear.reconstruct`` on one job; a JSON-able dict (``inputs`` as nested lists or None)."""
    from .attack import reconstruct

    b = job.budget
    t0 = time.perf_counter()
    rec = reconstruct(job.grad_weight, job.grad_bias, job.batch_size, weight=job.weight, bias=job.bias,
                      device=b["device"], seed=b["seed"], max_samples=b["max_samples"],
                      time_limit=b["time_limit"], method=b["search"])
    seconds = time.perf_counter() - t0
    f = findings.facts(rec, seconds=seconds, time_limit=b["time_limit"])
    return {"update": job.update, "name": job.layer, "shape": list(job.grad_weight.shape), **f,
            "seconds": round(seconds, 3),
            "inputs": None if rec.inputs is None else np.asarray(rec.inputs, dtype=np.float64).tolist()}


def layer_jobs(model: nn.Module, global_state: dict[str, torch.Tensor] | None, update_path: Path,
               layers: list[tuple[int, str]], config: AuditConfig) -> list[LayerJob]:
    """The jobs of one update file: its gradient (or global - new weights) for each layer."""
    update = load_state(update_path, "update")
    return update_jobs(model, global_state, update, str(update_path), layers, config)


def update_jobs(model: nn.Module, global_state: dict[str, torch.Tensor] | None, update: dict[str, torch.Tensor],
                label: str, layers: list[tuple[int, str]], config: AuditConfig) -> list[LayerJob]:
    """The jobs of one update (a state dict in memory, named ``label`` in errors and reports).

    ``model`` must hold the weights the server sent; with ``update_kind="weights"`` so must
    ``global_state``.
    """
    budget = {f.name: getattr(config, f.name) for f in dataclasses.fields(AttackBudget)}
    jobs = []
    for index, name in layers:
        prefix = f"{name}." if name else ""
        keys = [prefix + "weight", prefix + "bias"]
        missing = [k for k in keys if k not in update]
        if missing:
            raise ValueError(f"update {label} has no {missing[0]!r} (layer {name!r}): is it an update "
                             f"of this model?")
        if config.update_kind == "weights":
            # One local SGD step: global - new = lr * gradient; the attack is scale-invariant.
            # Subtracting in the file's dtype is exact for nearby weights (Sterbenz).
            grads = {k: global_state[k].to(update[k].dtype) - update[k] for k in keys}
        else:
            grads = {k: update[k] for k in keys}
        try:
            p = layer_payload(model, grads, index)
        except ValueError as e:
            raise ValueError(f"update {label}: {e}") from None
        jobs.append(LayerJob(update=label, layer=name, grad_weight=p.grad_weight,
                             grad_bias=p.grad_bias, weight=p.weight, bias=p.bias,
                             batch_size=config.batch_size, budget=budget))
    return jobs


def failed_result(job: LayerJob, error: str, seconds: float | None = None) -> dict[str, Any]:
    """The record of an attack that raised or whose worker died: kept, never dropped."""
    return {"update": job.update, "name": job.layer, "shape": list(job.grad_weight.shape),
            "batch_size": job.batch_size, "verdict": "failed", "complete": False, "certified": False,
            "diagnosis": f"the attack did not finish: {error}", "error": error,
            "seconds": None if seconds is None else round(seconds, 3), "inputs": None}


def attack_or_failure(job: LayerJob) -> dict[str, Any]:
    """:func:`attack_layer`, turning an exception into :func:`failed_result` (one bad job must
    not lose the others' results)."""
    t0 = time.perf_counter()
    try:
        return attack_layer(job)
    except Exception as e:                # noqa: BLE001 - reported in the index, with its type
        return failed_result(job, f"{type(e).__name__}: {e}", time.perf_counter() - t0)


def run_jobs(jobs: Sequence[LayerJob], *, ray_address: str | None = None, progress: bool = False,
             on_result=None) -> list[dict[str, Any]]:
    """Every job's result, in the order of ``jobs``: here one after the other, or one Ray task
    each (``ray_address``: ``"local"`` or a cluster address). ``on_result(job, result)`` is
    called as each finishes."""
    if ray_address is not None:
        from .integrations.ray_tasks import run_on_ray

        return run_on_ray(jobs, ray_address, progress=progress, on_result=on_result)
    from tqdm.auto import tqdm

    results = []
    for job in tqdm(jobs, desc="attacks", unit="layer", disable=not progress):
        results.append(attack_or_failure(job))
        if on_result is not None:
            on_result(job, results[-1])
    return results


# --- reports ----------------------------------------------------------------------------

def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "layer"


def write_layer(result: dict[str, Any], folder: Path, config: AuditConfig, title: str) -> dict[str, Any]:
    """Write the layer's recovered inputs (.npy, plus PNG or CSV); the summary record."""
    rec = dict(result)
    inputs = rec.pop("inputs")
    stem = f"layer_{_safe(rec['name'])}"
    rec["inputs"] = rec["image"] = rec["rows_csv"] = None
    if inputs is None:
        return rec
    x = np.asarray(inputs, dtype=np.float64)
    np.save(folder / f"{stem}.npy", x)
    rec["inputs"] = f"{stem}.npy"
    shape = config.input_shape
    if shape and len(shape) in (2, 3) and x.shape[1] == int(np.prod(shape)):
        imgs = x.reshape(len(x), *((1, *shape) if len(shape) == 2 else shape))
        report.input_grid(_per_image_range(imgs), folder / f"{stem}.png", title=title)
        rec["image"] = f"{stem}.png"
    else:
        report.write_csv([{"input": i, **{f"x{j}": v for j, v in enumerate(row)}} for i, row in enumerate(x)],
                         folder / f"{stem}.csv")
        rec["rows_csv"] = f"{stem}.csv"
    return rec


def _per_image_range(imgs: np.ndarray) -> np.ndarray:
    """Each image stretched to [0, 1]: the model's input normalisation is unknown here."""
    flat = imgs.reshape(len(imgs), -1)
    lo, hi = flat.min(1, keepdims=True), flat.max(1, keepdims=True)
    return ((flat - lo) / np.where(hi > lo, hi - lo, 1.0)).reshape(imgs.shape)


def layer_title(config: AuditConfig, rec: dict[str, Any]) -> str:
    text, _ = findings.verdict_of(rec)
    return f"{config.model} | layer {rec['name']} | b={rec['batch_size']} | {text}"


def write_report(config: AuditConfig, update: str | Path, records: list[dict[str, Any]], folder: Path,
                 seconds: float, device: str | None) -> dict[str, Any]:
    """One update's summary.json and report.html in ``folder``; returns the summary."""
    summary = {"model": config.model, "weights": config.weights, "update": str(update),
               "update_kind": config.update_kind, "version": __version__, "device": device,
               "seconds_total": round(seconds, 3), "config": asdict(config), "layers": records,
               "definitions": DEFINITIONS}
    report.write_json(summary, folder / "summary.json")
    certified = sum(bool(r["certified"]) for r in records)
    title = f"spear audit: {config.model}, update {Path(update).name}: {certified}/{len(records)} layers certified"
    facts = [("model", config.model), ("global weights", config.weights), ("update", str(update)),
             ("update kind", config.update_kind), ("layers attacked", ", ".join(r["name"] for r in records)),
             ("time limit per layer", config.time_limit), ("device", device), ("spear", __version__)]
    sections = []
    for r in records:
        text, level = findings.verdict_of(r)
        notes = [f"Layer {r['name']} ({r['shape'][0]} x {r['shape'][1]}), b = {r['batch_size']}, "
                 f"{r['seconds'] or 0:.1f} s. Recovered inputs: {r['inputs'] or 'none'}"
                 + (f", rows as CSV: {r['rows_csv']}" if r.get("rows_csv") else "") + "."]
        if r.get("image"):
            notes.append("Images are drawn with each input stretched to its own min..max (the model's "
                         "input normalisation is not known to the audit).")
        sections.append({"heading": f"Layer {r['name']}", "verdict": text, "level": level,
                         "image": folder / r["image"] if r.get("image") else None,
                         "certificate": findings.certificate_rows(r), "diagnosis": r["diagnosis"],
                         "inputs": _status_table(r.get("input_status")), "notes": notes})
    notes = ["No ground truth is known in an audit: 'certified' is the proof, computed from the layer's "
             "weight and bias alone, that the recovered rows are the client's inputs to that layer."]
    report.write_html(folder / "report.html", title, facts, sections, notes=notes)
    return summary


def _status_table(status: list | None):
    """The attack's per-input status (when it reports one) as a table."""
    if not status:
        return None
    return ["input", "status"], [[i, v if isinstance(v, str) else str(v)] for i, v in enumerate(status)]


def write_index(out: Path, summaries: list[tuple[Path, dict[str, Any]]], config: AuditConfig) -> None:
    """index.json and index.html over the updates' reports; failed attacks listed by name."""
    rows = [{"update": s["update"], "report": str(folder.relative_to(out) / "report.html"),
             "summary": str(folder.relative_to(out) / "summary.json"),
             "layers": len(s["layers"]), "certified": sum(bool(r["certified"]) for r in s["layers"]),
             "complete": sum(bool(r["complete"]) for r in s["layers"]),
             "failed": [{"layer": r["name"], "error": r["error"]} for r in s["layers"] if r.get("error")]}
            for folder, s in summaries]
    report.write_json({"model": config.model, "weights": config.weights, "updates": rows,
                       "failed": sum(len(r["failed"]) for r in rows), "version": __version__},
                      out / "index.json")
    report.write_html(out / "index.html", f"spear audit index: {config.model}, {len(rows)} updates",
                      [("model", config.model), ("global weights", config.weights)],
                      [{"heading": r["update"], "level": "ok" if r["certified"] == r["layers"] else
                        "warn" if r["complete"] else "fail",
                        "verdict": f"{r['certified']}/{r['layers']} layers certified, {r['complete']} complete"
                                   + "".join(f"; layer {f['layer']} FAILED: {f['error']}" for f in r["failed"]),
                        "link": r["report"]} for r in rows])


def result_line(label: str, result: dict[str, Any]) -> str:
    """The one line printed per attacked layer."""
    text, _ = findings.verdict_of(result)
    if result.get("error"):
        text = f"FAILED: {result['error']}"
    return f"{label:<17} layer {result['name']}: b={result['batch_size']} {text} ({result['seconds'] or 0:.1f} s)"


def run_audit(config: AuditConfig, out: str | None, *, overwrite: bool = False, progress: bool = False) -> int:
    """The ``spear audit`` command: attack every update, write reports, print a summary."""
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    if config.update_kind not in UPDATE_KINDS:
        raise ValueError(f"--update-kind must be one of {UPDATE_KINDS}, got {config.update_kind!r}")
    if config.ray is not None:
        from .integrations import require

        require("ray", "ray", "--ray")
    files = update_files(config.update)
    model = load_model(config.model)
    load_global_weights(model, config.weights)
    global_state = load_state(config.weights, "global weights") if config.update_kind == "weights" else None
    layers = attackable_layers(model, config.input_shape, config.layer)
    # Check every update before attacking any, so a bad file fails fast with one line.
    jobs = [layer_jobs(model, global_state, f, layers, config) for f in files]
    out_dir = outdir.prepare(out, "spear-audit", overwrite=overwrite)
    print(f"model             {config.model}: {len(layers)} attackable layer(s): "
          + ", ".join(f"{n} ({linear_layers(model)[i].out_features} x {linear_layers(model)[i].in_features})"
                      for i, n in layers))
    names = {str(f): f.name for f in files}
    flat = [job for file_jobs in jobs for job in file_jobs]
    results = run_jobs(flat, ray_address=config.ray, progress=progress,
                       on_result=lambda job, r: tqdm.write(result_line(names[job.update], r)))
    summaries = []
    stems: dict[str, int] = {}
    for f, file_jobs in zip(files, jobs):
        folder = out_dir
        if len(files) > 1:
            stem = _safe(f.stem)
            stems[stem] = stems.get(stem, 0) + 1
            folder = out_dir / (stem if stems[stem] == 1 else f"{stem}_{stems[stem]}")
            folder.mkdir()
        mine, results = results[:len(file_jobs)], results[len(file_jobs):]
        device = next((r["backend"] for r in mine if r.get("backend")), None)
        records = [write_layer(r, folder, config, layer_title(config, r)) for r in mine]
        seconds = sum(r["seconds"] or 0.0 for r in mine)    # attack time, also when run in parallel
        summaries.append((folder, write_report(config, f, records, folder, seconds, device)))
    if len(files) > 1:
        write_index(out_dir, summaries, config)
    failed = sum(bool(r.get("error")) for _, s in summaries for r in s["layers"])
    print(f"reports           {out_dir}/ ({'index.html' if len(files) > 1 else 'report.html'}, "
          f"{time.perf_counter() - t_start:.1f} s)" + (f"; {failed} attack(s) FAILED, see the index" if failed else ""))
    return 0
