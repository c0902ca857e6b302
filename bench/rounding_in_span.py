"""How the client's float32 rounding of gW reaches dZ' = gW X^+, against the certificate's
noise levels (the measurement behind CERT_ROUNDING in spear/attack/tolerance.py).

Attacks nothing: builds one client batch of an ``spear attack`` configuration, takes the
client's own dZ (float32) by a hook, and compares E = gW - dZ^T X (the rounding of torch's
float32 gW, computed in float64) at the exact zeros of dZ with
  - the isotropic model sigma_k ||X^+_i|| (sigma_k: what rank b leaves of row k, floored
    at the entries' rounding, as the certificate computes it), and
  - the rounding level eps ||gW_k|| ||X^+_i||,
and the non-zero entries of dZ with the same level.

    python bench/rounding_in_span.py --dataset imagenet --data-root DIR --image-size 720
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from spear.attack.tolerance import ROUNDING_ROW_FACTOR
from spear.experiment import AttackConfig, Experiment, batch_seed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="imagenet")
    p.add_argument("--data-root", default=None)
    p.add_argument("--image-size", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--batch", type=int, default=0)
    a = p.parse_args()
    c = AttackConfig(dataset=a.dataset, data_root=a.data_root, image_size=a.image_size,
                     batch_size=a.batch_size, width=a.width, device="cpu")
    exp = Experiment(c)
    x_np, y_np, _ = exp.dataset.sample_batch(c.batch_size, seed=batch_seed(c.seed, a.batch),
                                             label_homogeneous=False)
    lin = next(mod for mod in exp.model.modules() if isinstance(mod, torch.nn.Linear))
    store = {}

    def hook(mod, inputs, out):
        out.retain_grad()
        store["z"] = out

    handle = lin.register_forward_hook(hook)
    exp.model.zero_grad()
    torch.nn.functional.cross_entropy(exp.model(torch.from_numpy(x_np)),
                                      torch.from_numpy(y_np)).backward()
    handle.remove()
    dZ = store["z"].grad.detach().double().numpy().T          # m x b, the client's dZ
    X = torch.from_numpy(x_np).reshape(c.batch_size, -1).double().numpy()
    g = lin.weight.grad.detach().double().numpy()             # torch's float32 gW
    n, eps = X.shape[1], float(np.finfo(np.float32).eps)
    Xp = np.linalg.pinv(X)
    E_in_span = (g - dZ @ X) @ Xp                             # what rounding adds to dZ'
    resid = np.linalg.norm(g - (g @ Xp) @ X, axis=1) / np.sqrt(n - c.batch_size)
    sigma = np.maximum(resid, ROUNDING_ROW_FACTOR * eps * np.linalg.norm(g, axis=1) / np.sqrt(n))
    col = np.linalg.norm(Xp, axis=0)
    iso = sigma[:, None] * col[None, :]
    level = eps * np.linalg.norm(g, axis=1)[:, None] * col[None, :]
    live = (np.linalg.norm(g, axis=1) > 0)[:, None]          # dead neurons carry nothing
    zero = (dZ == 0) & live
    r_iso, r_lvl = np.abs(E_in_span[zero]) / iso[zero], np.abs(E_in_span[zero]) / level[zero]
    nz = np.abs(dZ[(dZ != 0) & live]) / level[(dZ != 0) & live]
    print(f"{a.dataset} {a.image_size or ''} n = {n}, b = {c.batch_size}, m = {c.width}, batch {a.batch}: "
          f"{int(zero.sum())} exact zeros of {zero.size}")
    print(f"  rounding at the zeros, in isotropic sigmas: median {np.median(r_iso):.3g}, "
          f"p99 {np.percentile(r_iso, 99):.3g}, max {r_iso.max():.3g}")
    print(f"  ... in units of eps ||gW_k|| ||X^+_i||:   median {np.median(r_lvl):.3g}, "
          f"p99 {np.percentile(r_lvl, 99):.3g}, max {r_lvl.max():.3g}")
    print(f"  non-zero entries in those units: min {nz.min():.3g}, p1 {np.percentile(nz, 1):.3g}, "
          f"median {np.median(nz):.3g}")


if __name__ == "__main__":
    main()
