"""Prototype (issue 18): joint dictionary recovery by l4-norm maximisation over the
orthogonal group (Zhai et al. 2020, "MSP"), measured against the per-direction ADM source
(one first round of ``dictionary_proposals``, unscreened and screened).

Output per case: msp = (seconds, iterations, true columns within |cos| 0.99, within 0.9);
true_dict_offdiag = largest |cos| between two true columns in the whitened coordinates
(0 for the orthogonal dictionary the method assumes); msp_cos_quartiles = per true
column, the best |cos| of an MSP row; msp+irls = (seconds, exact true columns after l0
IRLS and rounding from the MSP rows, within 0.99); dictionary / screened = (seconds,
exact true columns).

For each (b, m): synthetic float32 gradients (zero-mean inputs), prepare the problem as
``reconstruct`` does, run the candidate joint method, round, and count how many true
columns of Q (up to sign / scale, |cos| > 1 - 1e-9 in L's coordinates) the proposals
contain, and how long it took.

    OMP_NUM_THREADS=2 python bench/large/proto_l4.py --cases 64:2000 128:2000 256:4000
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from spear.attack.dictionary import dictionary_proposals, irls, round_to_exact, polish_exact, _zero_rows
from spear.attack.problem import prepare
from spear.synthetic import first_layer_gradients


def truth(g, problem):
    """True columns of Q (b x b, unit columns) in the coordinates of L_live."""
    X = g.inputs
    gW = g.grad_weight.double().numpy()
    dZ = gW @ np.linalg.pinv(X)                   # m x b
    dZ = dZ[problem.live]
    Q = np.linalg.lstsq(problem.L_live, dZ, rcond=None)[0]
    return Q / np.linalg.norm(Q, axis=0, keepdims=True)


def count_true(Qtrue, props, cos=1 - 1e-9):
    if len(props) == 0:
        return 0
    P = props / np.linalg.norm(props, axis=1, keepdims=True)
    C = np.abs(P @ Qtrue)                         # k x b
    return int((C.max(axis=0) > cos).sum())


def approx_true(Qtrue, props, cos):
    P = props / np.linalg.norm(props, axis=1, keepdims=True)
    return int((np.abs(P @ Qtrue).max(axis=0) > cos).sum())


def msp(U, iters, rng, tol=1e-10):
    """max ||A U^T||_4^4 over orthogonal A (b x b): A <- polar((A U^T)^3 U)."""
    b = U.shape[1]
    A = np.linalg.qr(rng.standard_normal((b, b)))[0]
    prev = 0.0
    for it in range(iters):
        Y = U @ A.T                               # m x b, column i = U a_i
        G = (Y * Y * Y).T @ U                        # b x b
        Us, _, Vt = np.linalg.svd(G)
        A = Us @ Vt
        val = float(((Y * Y) ** 2).sum())
        if abs(val - prev) <= tol * val:
            break
        prev = val
    return A, it + 1


def whiten(L):
    norms = np.linalg.norm(L, axis=1)
    Ln = L / norms[:, None]
    U, Ro = np.linalg.qr(Ln)
    return Ln, norms, U, Ro


def run_case(b, m, seed, args):
    g = first_layer_gradients(b, width=m, n=784, dtype=torch.float32, seed=seed)
    p = prepare(g.grad_weight, g.grad_bias, b, weight=g.weight, bias=g.bias, device="cpu")
    Qt = truth(g, p)
    L = p.L_live
    tol = p.tolerances
    Ln, norms, U, Ro = whiten(L)
    tr = tol.dict_thresh / norms
    rng = np.random.default_rng(seed)
    out = {}
    t0 = time.perf_counter()
    A, its = msp(U, args.iters, rng)
    t_msp = time.perf_counter() - t0
    Qc = np.linalg.solve(Ro, A.T).T               # rows, L coordinates
    Qc /= np.linalg.norm(Qc, axis=1, keepdims=True)
    out["msp"] = (round(t_msp, 2), its, approx_true(Qt, Qc, 0.99), approx_true(Qt, Qc, 0.9))
    Pt = Ro @ Qt
    Pt /= np.linalg.norm(Pt, axis=0, keepdims=True)
    off = np.abs(Pt.T @ Pt - np.eye(b)).max()
    best = np.abs(A @ Pt).max(axis=0)
    out["true_dict_offdiag"] = round(float(off), 3)
    out["msp_cos_quartiles"] = np.round(np.quantile(best, [0, .25, .5, .75, 1]), 3).tolist()
    # Refine: IRLS l0 on the MSP columns, then round.
    t0 = time.perf_counter()
    P = A.T.copy()
    P = irls(np, U, P, args.irls)
    Qi = np.linalg.solve(Ro, P).T
    Qi = round_to_exact(np, Ln, tr, Qi, rounds=2)
    Qi = polish_exact(np, Ln, tr, Qi)
    t_ref = time.perf_counter() - t0
    out["msp+irls"] = (t_msp + t_ref, count_true(Qt, Qi), approx_true(Qt, Qi, 0.99))
    if args.dictionary:
        t0 = time.perf_counter()
        q = dictionary_proposals(L, thresh=tol.dict_thresh, min_zeros=tol.dict_min_zeros, seed=seed)
        out["dictionary"] = (time.perf_counter() - t0, count_true(Qt, q))
    if args.screened:
        from spear.attack.screened import FIRST_STARTS_PER_COLUMN, refine_count
        t0 = time.perf_counter()
        q = dictionary_proposals(L, thresh=tol.dict_thresh, min_zeros=tol.dict_min_zeros, seed=seed,
                                 num_starts=FIRST_STARTS_PER_COLUMN * b, max_refine=refine_count(b, None))
        out["screened"] = (time.perf_counter() - t0, count_true(Qt, q))
    print(f"b={b} m={m} seed={seed}: " + "  ".join(f"{k}={v}" for k, v in out.items()), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="+", default=["64:2000", "128:2000"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--irls", type=int, default=12)
    ap.add_argument("--dictionary", action="store_true", help="also one unscreened dictionary round")
    ap.add_argument("--screened", action="store_true", help="also one screened first round")
    args = ap.parse_args()
    for c in args.cases:
        b, m = (int(x) for x in c.split(":"))
        for s in args.seeds:
            run_case(b, m, s, args)


if __name__ == "__main__":
    main()
