"""A Flower strategy that audits every client update it aggregates (``spear[flower]``).

``AuditStrategy(strategy, model, out)`` wraps any Flower ``Strategy``. It remembers the
parameters the server sends each round (``configure_fit``), and in ``aggregate_fit`` it
attacks each client's update for every ``nn.Linear`` of ``model`` that feeds a ReLU: the
client's returned weights against the parameters it was sent (``global - new``, which for
one local SGD step is ``lr x gradient``), or the client's parameters as they are when the
client says they are gradients (``FitRes.metrics["spear_update"] == "gradient"``).
Aggregation is the wrapped strategy's, untouched: ``aggregate_fit`` returns exactly what it
returns.

Attacks run in worker processes (or threads) in parallel; ``aggregate_fit`` waits for them
at most ``round_budget`` seconds, then returns and leaves the rest running. Results are
written as each attack finishes:

- ``out/audit.jsonl``: one line per (round, client, layer): ``round``, ``client`` (and Flower's ``cid``),
  ``layer``, ``complete``, ``certified``, ``inputs`` (a ``.npy`` path relative to ``out``, or
  null), ``diagnosis``, and the verdict's figures;
- ``out/round_NNN/client_ID/``: the client's report, as ``spear audit`` writes it
  (``report.html``, ``summary.json``, the recovered inputs);
- ``out/index.json``, ``out/index.html``: every round's clients, written by :meth:`close`,
  which waits for the attacks still running.

Flower sends parameters as a list of arrays, by convention in the order of
``model.state_dict()``; ``param_names`` gives another order.
"""
from __future__ import annotations

import concurrent.futures as cf
import copy
import json
import multiprocessing
import threading
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .. import outdir
from ..audit import (AuditConfig, LayerJob, attack_or_failure, attackable_layers, failed_result, layer_title,
                     result_line, update_jobs, write_index, write_layer, write_report)
from ..settings import AttackBudget
from . import require

_flwr = require("flwr", "flower", "spear.integrations.flower")
from flwr.common import parameters_to_ndarrays  # noqa: E402
from flwr.server.strategy import Strategy  # noqa: E402

UPDATE_METRIC = "spear_update"     # FitRes.metrics key a client may set to "gradient" or "weights"
PARALLEL = ("process", "thread")
JSONL = "audit.jsonl"
#: The fields of each audit.jsonl line besides round, client, layer, inputs (from the attack's record).
LINE_FIELDS = ("complete", "certified", "verdict", "batch_size", "violation_rate", "noise_level", "diagnosis",
               "seconds", "error")


class AuditStrategy(Strategy):
    """Wrap ``strategy``; attack every client update of every round (see the module docstring).

    ``model``: the architecture (an ``nn.Module``; its weights are replaced by each round's).
    ``out``: the output folder (new, or empty; ``overwrite=True`` empties it).
    ``update_kind``: ``"weights"`` (clients return their new weights, Flower's default) or
    ``"gradient"``. ``workers``, ``parallel``: how many attacks run at once, in processes
    (default) or threads. ``round_budget``: seconds ``aggregate_fit`` may wait for a round's
    attacks (None: until they finish). ``layer``, ``batch_size``, ``input_shape``: as in
    ``spear audit``. ``client_key``: a ``FitRes.metrics`` key whose value names the client in
    the reports (e.g. ``"partition_id"``; default and when absent: Flower's client id, which
    in a simulation is a random node id). ``attack_options``: the attack budget (``time_limit``, ``max_samples``,
    ``seed``, ``device``, ``search``; defaults of :class:`spear.settings.AttackBudget`).
    """

    def __init__(self, strategy: Strategy, model: nn.Module, out: str | Path, *, update_kind: str = "weights",
                 workers: int = 2, parallel: str = "process", round_budget: float | None = 60.0,
                 layer: str | None = None, batch_size: int | None = None,
                 input_shape: Sequence[int] | None = None, param_names: Sequence[str] | None = None,
                 client_key: str | None = None, overwrite: bool = False, **attack_options: Any) -> None:
        super().__init__()
        if not isinstance(strategy, Strategy):
            raise ValueError(f"strategy must be a Flower Strategy, got {type(strategy).__name__}")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch nn.Module, got {type(model).__name__}")
        budget_names = {f.name for f in fields(AttackBudget)}
        unknown = sorted(set(attack_options) - budget_names)
        if unknown:
            raise ValueError(f"unknown attack option(s) {unknown}; known: {sorted(budget_names)}")
        if parallel not in PARALLEL:
            raise ValueError(f"parallel must be one of {PARALLEL}, got {parallel!r}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if round_budget is not None and round_budget < 0:
            raise ValueError(f"round_budget must be >= 0 seconds or None, got {round_budget}")
        self.strategy = strategy
        self.model = copy.deepcopy(model).eval()
        self.names = list(param_names) if param_names is not None else list(self.model.state_dict())
        own = self.model.state_dict()
        if sorted(self.names) != sorted(own):
            raise ValueError(f"param_names must name the model's state_dict entries, each once; the model "
                             f"has {len(own)} ({', '.join(list(own)[:4])}, ...)")
        self.config = AuditConfig(model=type(model).__name__, weights="the parameters the server sent",
                                  update=("flower",), update_kind=update_kind, layer=layer, batch_size=batch_size,
                                  input_shape=None if input_shape is None else tuple(input_shape),
                                  **attack_options)
        if update_kind not in ("weights", "gradient"):
            raise ValueError(f"update_kind must be 'weights' or 'gradient', got {update_kind!r}")
        self.layers = attackable_layers(self.model, self.config.input_shape, layer)
        self.out = outdir.prepare(str(out), "spear-flower-audit", overwrite=overwrite)
        self.workers, self.parallel, self.round_budget = workers, parallel, round_budget
        self.client_key = client_key
        self._sent: dict[int, list[np.ndarray]] = {}
        self._pool: cf.Executor | None = None
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, str], dict[str, Any]] = {}   # (round, client) -> jobs left, records
        self._summaries: list[tuple[Path, dict[str, Any]]] = []
        self._futures: list[cf.Future] = []

    def __repr__(self) -> str:
        return f"AuditStrategy({self.strategy!r}, out={str(self.out)!r})"

    # --- delegated to the wrapped strategy ----------------------------------------------

    def initialize_parameters(self, client_manager):
        return self.strategy.initialize_parameters(client_manager)

    def configure_fit(self, server_round, parameters, client_manager):
        self._sent[server_round] = [np.array(a, copy=True) for a in parameters_to_ndarrays(parameters)]
        return self.strategy.configure_fit(server_round, parameters, client_manager)

    def configure_evaluate(self, server_round, parameters, client_manager):
        return self.strategy.configure_evaluate(server_round, parameters, client_manager)

    def aggregate_evaluate(self, server_round, results, failures):
        return self.strategy.aggregate_evaluate(server_round, results, failures)

    def evaluate(self, server_round, parameters):
        return self.strategy.evaluate(server_round, parameters)

    # --- the audit ----------------------------------------------------------------------

    def aggregate_fit(self, server_round, results, failures):
        """Start the attacks of this round's updates, aggregate with the wrapped strategy, wait
        for the attacks at most ``round_budget`` seconds (from the call) and return the
        wrapped strategy's result unchanged."""
        t0 = time.monotonic()
        futures = self._submit_round(server_round, results)
        aggregated = self.strategy.aggregate_fit(server_round, results, failures)
        if futures:
            left = None if self.round_budget is None else max(0.0, self.round_budget - (time.monotonic() - t0))
            _, running = cf.wait(futures, timeout=left)
            if running:
                print(f"spear audit: round {server_round}: {len(running)} attack(s) still running after the "
                      f"{self.round_budget:g} s budget; they finish in the background (close() waits)")
        return aggregated

    def _submit_round(self, server_round: int, results) -> list[cf.Future]:
        sent = self._sent.pop(server_round, None)      # one round's copy of the model at a time
        if sent is None:
            # The audit needs the parameters sent this round; the aggregation goes on regardless.
            for proxy, _ in results:
                self._record_unattackable(server_round, str(proxy.cid), str(proxy.cid), {},
                                          "aggregate_fit without configure_fit: the parameters the server "
                                          "sent this round are unknown to the audit")
            return []
        global_state = self._state(sent, "the parameters the server sent")
        self.model.load_state_dict(global_state)
        futures = []
        for proxy, fit_res in results:
            metrics = _plain_metrics(getattr(fit_res, "metrics", None) or {})
            client = str(metrics.get(self.client_key, proxy.cid)) if self.client_key else str(proxy.cid)
            kind = metrics.get(UPDATE_METRIC, self.config.update_kind)
            label = f"round {server_round} client {client}"
            try:
                if kind not in ("weights", "gradient"):
                    raise ValueError(f"{UPDATE_METRIC} metric must be 'weights' or 'gradient', got {kind!r}")
                update = self._state(parameters_to_ndarrays(fit_res.parameters), f"client {client}'s update")
                config = _replace(self.config, update_kind=kind, update=(label,))
                jobs = update_jobs(self.model, global_state, update, label, self.layers, config)
            except ValueError as e:
                # A malformed update is a finding of its own; it must not stop the round.
                self._record_unattackable(server_round, client, str(proxy.cid), metrics, str(e))
                continue
            key = (server_round, client)
            with self._lock:
                self._pending[key] = {"left": len(jobs), "records": [None] * len(jobs), "metrics": metrics,
                                      "cid": str(proxy.cid),
                                      "config": config, "t0": time.monotonic()}
            for i, job in enumerate(jobs):
                future = self._executor().submit(attack_or_failure, job)
                future.add_done_callback(lambda f, key=key, i=i, job=job: self._finished(key, i, job, f))
                futures.append(future)
        self._futures += futures
        return futures

    def _state(self, arrays: list[np.ndarray], what: str) -> dict[str, torch.Tensor]:
        """Flower's list of arrays as the model's state dict, checked against its shapes."""
        if len(arrays) != len(self.names):
            raise ValueError(f"{what}: {len(arrays)} arrays, the model has {len(self.names)} parameters and "
                             f"buffers (Flower sends them in state_dict order; else pass param_names)")
        own = self.model.state_dict()
        state = {}
        for name, a in zip(self.names, arrays):
            if tuple(a.shape) != tuple(own[name].shape):
                raise ValueError(f"{what}: {name!r} has shape {tuple(a.shape)}, the model expects "
                                 f"{tuple(own[name].shape)}")
            state[name] = torch.from_numpy(np.array(a, copy=True)).to(own[name].dtype)
        return state

    def _executor(self) -> cf.Executor:
        if self._pool is None:
            if self.parallel == "process":
                # spawn: forking a process that runs Ray's and gRPC's threads is unsafe.
                self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            else:
                self._pool = cf.ThreadPoolExecutor(self.workers, thread_name_prefix="spear-audit")
        return self._pool

    def _finished(self, key: tuple[int, str], i: int, job: LayerJob, future: cf.Future) -> None:
        try:
            result = future.result()
        except BaseException as e:          # noqa: BLE001 - a dead worker: keep the job, say why
            result = failed_result(job, f"{type(e).__name__}: {e}")
        server_round, client = key
        with self._lock:
            entry = self._pending[key]
            folder = self._client_folder(server_round, client)
            record = write_layer(result, folder, entry["config"], layer_title(entry["config"], result))
            entry["records"][i] = record
            self._append_line(server_round, client, entry["cid"], record, folder, entry["metrics"])
            print(result_line(f"round {server_round} {client}", result))
            entry["left"] -= 1
            if entry["left"] == 0:
                records = entry["records"]
                device = next((r.get("backend") for r in records if r.get("backend")), None)
                summary = write_report(entry["config"], f"round {server_round} client {client}", records, folder,
                                       sum(r.get("seconds") or 0.0 for r in records), device)
                summary.update(round=server_round, client=client, cid=entry["cid"], metrics=entry["metrics"])
                self._summaries.append((folder, summary))
                del self._pending[key]

    def _record_unattackable(self, server_round: int, client: str, cid: str, metrics: dict, error: str) -> None:
        with self._lock:
            self._append_line(server_round, client, cid, {"name": None, "complete": False, "certified": False,
                                                     "verdict": "failed", "error": error,
                                                     "diagnosis": f"the update could not be attacked: {error}",
                                                     "inputs": None}, None, metrics)
            print(f"spear audit: round {server_round} client {client}: {error}")

    def _client_folder(self, server_round: int, client: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in client)
        folder = self.out / f"round_{server_round:03d}" / f"client_{safe}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _append_line(self, server_round: int, client: str, cid: str, record: dict, folder: Path | None,
                     metrics: dict) -> None:
        inputs = record.get("inputs")
        line = {"round": server_round, "client": client, "cid": cid, "layer": record.get("name"),
                "inputs": None if inputs is None else str((folder / inputs).relative_to(self.out)),
                **{k: record.get(k) for k in LINE_FIELDS},
                "report": None if folder is None else str((folder / "report.html").relative_to(self.out)),
                "metrics": metrics}
        with open(self.out / JSONL, "a") as f:
            f.write(json.dumps(line) + "\n")

    def close(self) -> dict[str, Any]:
        """Wait for the attacks still running, write ``index.json`` / ``index.html`` over every
        round's clients, stop the workers; returns the index. Call it once training ends."""
        cf.wait(self._futures)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._lock:
            summaries = sorted(self._summaries, key=lambda s: (s[1]["round"], s[1]["client"]))
            write_index(self.out, summaries, self.config)
        return json.loads((self.out / "index.json").read_text())

    def lines(self) -> list[dict[str, Any]]:
        """The audit.jsonl lines written so far."""
        path = self.out / JSONL
        return [json.loads(t) for t in path.read_text().splitlines()] if path.exists() else []


def _replace(config: AuditConfig, **changes) -> AuditConfig:
    from dataclasses import replace

    return replace(config, **changes)


def _plain_metrics(metrics: dict) -> dict[str, Any]:
    """FitRes metrics as JSON-able values (bytes are summarised, not written)."""
    return {str(k): (v if isinstance(v, (bool, int, float, str)) else f"<{type(v).__name__}>")
            for k, v in metrics.items()}
