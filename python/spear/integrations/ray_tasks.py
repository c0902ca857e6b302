"""``spear audit --ray``: one Ray task per (update, layer) attack, on a local Ray instance or
a running cluster.

Each task runs :func:`spear.audit.attack_or_failure` on a picklable
:class:`spear.audit.LayerJob`; the attack is seeded, so the results are those of the serial
run. A task that raises or whose worker dies becomes a ``failed`` record (kept, reported in
the index). Every node of a cluster needs the same ``spear`` installed: tasks import it.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from . import require

LOCAL = "local"        # the value of a bare --ray: start a Ray instance on this machine
MAX_RETRIES = 1        # a worker that died (e.g. out of memory) is retried once, then reported


def connect(address: str):
    """Ray, initialised on ``address`` (``"local"``: a new local instance); and whether this
    call started it (then the caller shuts it down)."""
    ray = require("ray", "ray", "--ray")
    if ray.is_initialized():
        return ray, False
    try:
        ray.init(address=None if address == LOCAL else address, include_dashboard=False,
                 logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--ray {address}: cannot start or join a Ray cluster: {first}") from None
    return ray, True


def run_on_ray(jobs: Sequence, address: str, *, progress: bool = False,
               on_result: Callable[[Any, dict], None] | None = None) -> list[dict[str, Any]]:
    """The results of ``jobs`` (in their order), each attacked by one Ray task.

    A task asks for one CPU, and one GPU when the cluster has any (the attack then runs on it
    with ``device="auto"``).
    """
    from tqdm.auto import tqdm

    from ..audit import attack_or_failure, failed_result

    ray, started = connect(address)
    try:
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        task = ray.remote(attack_or_failure).options(num_cpus=1, num_gpus=1 if gpus else 0,
                                                      max_retries=MAX_RETRIES)
        refs = [task.remote(job) for job in jobs]
        where = {ref: i for i, ref in enumerate(refs)}
        results: list[dict[str, Any] | None] = [None] * len(jobs)
        pending = list(refs)
        with tqdm(total=len(refs), desc="ray tasks", unit="task", disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = where[ref]
                    try:
                        result = ray.get(ref)
                    except Exception as e:        # noqa: BLE001 - the worker died: keep the job, say why
                        text = str(e).strip().splitlines()
                        result = failed_result(jobs[i], f"{type(e).__name__}: {text[0] if text else ''}")
                    results[i] = result
                    if on_result is not None:
                        on_result(jobs[i], result)
                    bar.update()
        return results
    finally:
        if started:
            ray.shutdown()
