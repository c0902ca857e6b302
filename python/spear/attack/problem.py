"""Prepare: everything the search needs, built once from what the server sees.

validate -> backend -> factorize (gW = L R, rank from the spectrum) -> noise model ->
dead rows -> the tolerance policy -> the certifier. The search and the finishing step
read all of it from one :class:`Problem`; the result keeps its :class:`Factor` so that
its directions can be interpreted later (warm starts, label inference).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import backend as _backend
from . import validate
from .certify import Certifier
from .decompose import factorize, noise_scale, relative_noise
from .tolerance import Tolerances, is_exact, policy_for, row_noise

#: Rows of gW per chunk when measuring what rank b leaves of each row (bounds memory).
_RESIDUAL_CHUNK_BYTES = 1 << 27


@dataclass
class Factor:
    """gW = L R on the host: what a result's directions q refer to (dZ = L Q, X^T = Q^-1 R).

    L: (m, b), rows of neurons inactive for the whole batch set to zero; R: (b, n);
    spectrum: the leading singular values of gW (at least b, b + 1 when there is one);
    live: (m,) bool, the neurons with a non-zero gradient."""

    L: np.ndarray
    R: np.ndarray
    spectrum: np.ndarray
    live: np.ndarray

    @property
    def batch_size(self) -> int:
        return self.L.shape[1]


@dataclass
class Problem:
    """One layer's gradients, factored, with every threshold the attack will use."""

    backend: _backend.Backend
    shape: tuple[int, int]       # (m, n) of grad_weight
    dtype: np.dtype              # the gradient's dtype (sets the rounding level)
    gW: Any                      # (m, n) float64, on the backend
    gb: Any                      # (m,)
    weight: Any | None           # the layer's parameters (float64), or None
    bias: Any | None
    L: Any                       # (m, b) on the backend, dead rows exactly zero
    R: Any                       # (b, n) on the backend
    spectrum: np.ndarray
    rank: Any                    # decompose.RankEstimate: what the spectrum's structure says
    requested: int               # batch size asked for; b < requested when inputs lie below the level
    live: np.ndarray             # (m,) bool
    L_live: np.ndarray           # (rows, b) float64 host copy of the live rows
    tolerances: Tolerances
    certifier: Certifier | None
    sigma_rows: Any = None       # (m,) noise std of each row of gW (0 on dead rows)
    exact: bool = True           # the noise beyond rank b is rounding, not additive
    search: np.ndarray | None = None   # (rows, b) whitened factor A = M / sigma (host)
    root: np.ndarray | None = None     # (b,) s_j^1/2: q = root * p maps A's to L's coordinates
    noise_live: np.ndarray | None = None   # (rows,) sigma of the live rows (host): M = A * sigma

    def to_factor(self, P: np.ndarray) -> np.ndarray:
        """Unit directions (rows) in the search's coordinates -> unit rows in L's."""
        Q = np.asarray(P, dtype=np.float64) * self.root[None, :]
        return Q / np.linalg.norm(Q, axis=1, keepdims=True)

    def to_search(self, Q: np.ndarray) -> np.ndarray:
        """Unit directions (rows) in L's coordinates -> unit rows in the search's."""
        P = np.asarray(Q, dtype=np.float64) / self.root[None, :]
        return P / np.linalg.norm(P, axis=1, keepdims=True)
    seconds: dict = field(default_factory=dict)

    @property
    def xp(self):
        return self.backend.xp

    @property
    def b(self) -> int:
        return int(self.L.shape[1])

    def factor(self) -> Factor:
        to = self.backend.to_numpy
        return Factor(L=to(self.L), R=to(self.R), spectrum=self.spectrum.copy(), live=self.live.copy())

    def stats(self) -> dict:
        return {"backend": self.backend.name, "batch_size": self.requested,
                "recoverable_inputs": self.b, "rank_level": self.rank.level, "rows": int(self.shape[0]),
                "rows_used": int(self.live.sum()), **self.tolerances.as_stats(),
                "singular_values": self.spectrum.tolist()}


def prepare(grad_weight, grad_bias, batch_size: int | None = None, *, weight=None, bias=None,
            device: str = "auto") -> Problem:
    """Validate and factor one layer's gradients; raise ValueError / TypeError naming the
    problem for bad input (shapes, dtypes, NaN, a batch size the gradient cannot have)."""
    m, n, dtype = validate.check_gradients(grad_weight, grad_bias)
    validate.check_layer(weight, bias, m, n)
    validate.check_batch_size(batch_size, m, n)
    be = _backend.resolve(device)
    xp = be.xp
    # Work in float64 whatever the gradient's dtype: the noise it carries is estimated below.
    gW = be.asarray(grad_weight, dtype=xp.float64)
    gb = be.asarray(grad_bias, dtype=xp.float64)
    validate.check_finite(xp, gW, "grad_weight")
    validate.check_finite(xp, gb, "grad_bias")
    if not bool(xp.any(gb != 0)) and bool(xp.any(gW != 0)):
        raise ValueError(
            "grad_bias is zero while grad_weight is not: the layer has no bias (or a frozen "
            "one). SPEAR reads each input's scale from the bias gradient (dZ 1 = grad_bias), "
            "so a Linear without bias cannot be inverted by it")
    W = Bv = None
    if weight is not None:
        W, Bv = be.asarray(weight, dtype=xp.float64), be.asarray(bias, dtype=xp.float64)
        validate.check_finite(xp, W, "weight")
        validate.check_finite(xp, Bv, "bias")

    t0 = time.perf_counter()
    fac = factorize(xp, gW, batch_size, dtype)
    b = fac.L.shape[1]
    seconds = {"svd": time.perf_counter() - t0}
    s = fac.singular_values
    # Relative noise of L: what lies beyond the b-th singular value (or the dtype's
    # rounding); additive noise (DP-SGD, FedAvg drift) as a std in L q.
    noise_rel, sigma = relative_noise(s, b), noise_scale(s, b, m, n)
    # Neurons inactive for the whole batch (computed where gW lives: it can be GBs).
    live = be.to_numpy(xp.abs(gW).sum(axis=1) > 0)
    # Their rows of L are rounding noise, not zeros: make them exact zeros.
    fac.L[xp.asarray(~live)] = 0
    L_live = np.ascontiguousarray(be.to_numpy(fac.L)[live])
    if L_live.shape[0] < b - 1:
        raise ValueError(f"only {L_live.shape[0]} neurons of {m} have a non-zero gradient; "
                         f"at least b-1 = {b - 1} are needed")
    sigma_rows = row_noise(xp, _residual_rows(xp, gW, fac.L, fac.R), xp.asarray(live), n, b,
                           float(s[0]), xp.linalg.norm(gW, axis=1), float(np.finfo(dtype).eps))
    exact = is_exact(s, b, float(xp.linalg.norm(gW)))
    root = np.sqrt(np.asarray(s[:b], dtype=np.float64))
    root_xp = xp.asarray(root)
    # The whitened factor: M = L S^1/2 = U S, each live row divided by its noise.
    noise_live = be.to_numpy(sigma_rows)[live]
    A = np.ascontiguousarray(L_live * root[None, :] / noise_live[:, None])
    certifier = None if W is None else Certifier(
        xp, fac.L, fac.R, W, Bv, sigma_rows=sigma_rows, exact=exact,
        col_noise=lambda Q: xp.linalg.norm(Q / root_xp[:, None], axis=0),
        eps=float(np.finfo(dtype).eps))
    return Problem(backend=be, shape=(m, n), dtype=dtype, gW=gW, gb=gb, weight=W, bias=Bv,
                   L=fac.L, R=fac.R, spectrum=s, rank=fac.rank, requested=fac.requested,
                   live=live, L_live=L_live,
                   tolerances=policy_for(A, noise_rel, sigma, exact), certifier=certifier,
                   seconds=seconds, sigma_rows=sigma_rows, exact=exact, search=A, root=root,
                   noise_live=noise_live)


def _residual_rows(xp, gW, L, R):
    """||row k of (gW - L R)||: what rank b leaves of each row (its noise), in chunks."""
    m, n = gW.shape
    step = max(1, _RESIDUAL_CHUNK_BYTES // (8 * n))
    return xp.concatenate([xp.linalg.norm(gW[i:i + step] - L[i:i + step] @ R, axis=1)
                           for i in range(0, m, step)])
