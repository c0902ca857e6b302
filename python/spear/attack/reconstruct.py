"""``spear.reconstruct``: the whole SPEAR pipeline from one layer's gradients.

    prepare (problem.py)   validate, factorize gW = L R, noise model, dead rows, the one
                           tolerance policy (tolerance.py), the certifier
    search  (search.py)    direction sources (sources.py: sampler, dictionary, yours)
                           take turns; pool, greedy selection, certificate-guided swaps;
                           one budget (budget.py)
    finish  (finish.py)    fit, verdict, the Reconstruction with its factor

Sees only what a server sees: gradients, the layer's weight and bias, settings.
"""
from __future__ import annotations

import time
from typing import Sequence

from .budget import Budget
from .finish import Reconstruction, finish
from .problem import prepare
from .search import search
from .sources import METHODS, DirectionSource, sources_for

__all__ = ["METHODS", "Reconstruction", "reconstruct"]


def reconstruct(grad_weight, grad_bias, batch_size: int | None = None, *, weight=None, bias=None,
                device: str = "auto", seed: int = 0, max_samples: int | None = None,
                time_limit: float | None = None, progress: bool = False,
                method: str | Sequence[DirectionSource] = "auto",
                unverified: bool = False) -> Reconstruction:
    """Recover the inputs of a linear layer followed by a ReLU from its gradients.

    Parameters
    ----------
    grad_weight, grad_bias : (m, n) and (m,) gradients (or an update scaled like one) as
        numpy arrays, torch tensors or CuPy arrays, float32 or float64.
    batch_size : number of inputs b; None infers it from the singular value gap.
    weight, bias : the layer's parameters (the server always has them): the certificate
        checks the answer against them. Required unless ``unverified=True``.
    device : "auto", "cpu" or "cuda".
    seed : sampler seed (same seed, same submatrices on every backend).
    max_samples, time_limit : the budget (sampler samples, seconds). When spent the
        result has ``complete=False`` and ``inputs=None``: never a guess.
    progress : show a progress bar.
    method : where candidate directions come from: "sample" (random submatrices, the
        compiled kernel), "dictionary" (sparse dictionary recovery from many starts, for
        large batches), "screened" (its rounds refining only the sparsest starts, for
        b > 100), "auto" (up to b = 100 dictionary proposals first, then the columns of
        look-alike inputs next to those selected, and the sampler for the rest; above,
        screened rounds alone), or
        an ordered list of :class:`~spear.attack.sources.DirectionSource` objects.
    unverified : opt in to attacking without weight and bias. Nothing can then check the
        answer: the inputs come back with verdict "unverified", never ``complete``.
    """
    budget = Budget(time_limit=time_limit, max_samples=max_samples)
    sources = sources_for(method)
    if weight is None and bias is None and not unverified:
        raise ValueError("reconstruct needs the layer's weight and bias to check its answer (a "
                         "server always has them); pass unverified=True to attack without them, "
                         "and the result is then never called complete")
    problem = prepare(grad_weight, grad_bias, batch_size, weight=weight, bias=bias, device=device)
    if isinstance(method, str):
        sources = sources_for(method, problem.b)     # "auto" chooses by the batch size
    t0 = time.perf_counter()
    outcome = search(problem, sources, budget, seed=seed, progress=progress)
    seconds = dict(problem.seconds)
    seconds["sampling"] = time.perf_counter() - t0 - outcome.seconds["selection"]
    seconds["selection"] = outcome.seconds["selection"]
    stats = {**problem.stats(), "seed": int(seed), "samples": budget.samples,
             "candidates": outcome.candidates, "unique_candidates": outcome.pool_size,
             "directions_found": outcome.found,
             "method": method if isinstance(method, str) else [s.name for s in sources],
             "rounds": outcome.rounds, "dictionary_rounds": outcome.rounds.get("dictionary", 0),
             "source_seconds": {k: v for k, v in outcome.seconds.items() if k != "selection"}}
    rec = finish(problem, outcome, budget, stats)
    seconds["total"] = budget.elapsed()
    rec.stats["seconds"] = seconds
    return rec
