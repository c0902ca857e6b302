"""Fixtures for issue #13: first-layer gradients of TRAINED ReLU MLPs on MNIST.

Trains on the first 8,000 MNIST test digits (normalized, mean 0.1307 / std 0.3081),
attacks held-out batches drawn from the last 2,000. Everything is seeded.

    OMP_NUM_THREADS=1 python make_fixtures.py                 # the two issue nets
    python make_fixtures.py --only mlp1000                    # one of them
    python make_fixtures.py --width 100 --depth 3 --steps 30 --tag small   # custom

Each fixture  fixtures/<tag>_b<b>_s<seed>.npz  holds
    gW (m,n) float32, gb (m,) float32       client gradient of the mean cross-entropy
    W (m,n) float32, bias (m,) float32      the layer (server knows it)
    X (b,n) float64                          true inputs (exactly the float32 values)
    y (b,)                                   labels
    dZ (m,b) float64                         true dL/dZ (float64 forward/backward of the same net)
    gW64 (m,n), gb64 (m,)                    the float64 gradient (reference only)
    loss_grad (b,)   ||dL_i/dlogits|| of each input (per-input loss-gradient norm; mean loss)
    dz_norm (b,)     ||dZ[:, i]||, contrib (b,) ||dZ_i|| * ||x_i|| (input i's share of gW)
    meta: json string (width, depth, epochs, steps, train seconds, accuracy)
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from spear.data.mnist import read_idx, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC

ROOT = Path(os.environ.get("SPEAR_DATASETS", Path(__file__).resolve().parents[3] / "shared" / "datasets")) / "mnist"
OUT = Path(__file__).resolve().parent / "fixtures"
N_TRAIN = 8000


def load_mnist(raw: bool = False):
    """Normalized (mean 0.1307, std 0.3081) unless raw (pixels in [0, 1])."""
    x = read_idx(ROOT / "t10k-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC).reshape(-1, 784)
    y = read_idx(ROOT / "t10k-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC).astype(np.int64)
    x = x.astype(np.float32) / 255.0
    if not raw:
        x = (x - np.float32(0.1307)) / np.float32(0.3081)
    return x, y


def make_net(width: int, depth: int, seed: int, dtype=torch.float32):
    """depth linear layers 784 -> width x (depth-1) -> 10, ReLU between (PyTorch default init)."""
    dims = [784] + [width] * (depth - 1) + [10]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mods = []
        for i in range(depth):
            mods.append(torch.nn.Linear(dims[i], dims[i + 1], dtype=dtype))
            if i < depth - 1:
                mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)


def train(net, x, y, *, epochs: float = 1, steps: int | None = None, lr=0.05, momentum=0.9,
          batch=64, seed=0):
    """SGD with momentum on (x, y); ``steps`` overrides epochs. Returns seconds."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)
    g = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    n = len(x)
    total = steps if steps is not None else int(round(epochs * (n // batch)))
    t0 = time.perf_counter()
    done = 0
    while done < total:
        perm = torch.randperm(n, generator=g)
        for k in range(n // batch):
            if done >= total:
                break
            idx = perm[k * batch:(k + 1) * batch]
            loss = torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
    return time.perf_counter() - t0, total


def first_layer_gradient(net, xb, yb, dtype):
    net = net.to(dtype)
    x = torch.from_numpy(xb).to(dtype)
    y = torch.from_numpy(yb)
    net.zero_grad(set_to_none=True)   # training leaves the last step's grads: never accumulate onto them
    first = net[0]
    z = first(x)
    z.retain_grad()
    logits = net[1:](z)
    logits.retain_grad()
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    out = (first.weight.grad.detach().clone(), first.bias.grad.detach().clone(),
           z.grad.detach().T.clone(), logits.grad.detach().clone())
    net.zero_grad()
    return out


def fixtures_for(net, tag, x, y, batches, seeds, meta, out=OUT):
    out.mkdir(parents=True, exist_ok=True)
    held = np.arange(N_TRAIN, len(x))
    paths = []
    for b in batches:
        for s in seeds:
            rng = np.random.default_rng(1000 * b + s)
            idx = rng.choice(held, size=b, replace=False)
            xb, yb = x[idx], y[idx]
            net32 = net.float()
            gW, gb, _, _ = first_layer_gradient(net32, xb, yb, torch.float32)
            import copy
            net64 = copy.deepcopy(net).double()
            gW64, gb64, dZ, dlog = first_layer_gradient(net64, xb, yb, torch.float64)
            dZ = dZ.numpy()
            X = xb.astype(np.float64)
            p = out / f"{tag}_b{b}_s{s}.npz"
            np.savez_compressed(
                p, gW=gW.numpy(), gb=gb.numpy(), W=net32[0].weight.detach().numpy(),
                bias=net32[0].bias.detach().numpy(), X=X, y=yb, dZ=dZ, gW64=gW64.numpy(),
                gb64=gb64.numpy(), loss_grad=dlog.norm(dim=1).numpy(),
                dz_norm=np.linalg.norm(dZ, axis=0),
                contrib=np.linalg.norm(dZ, axis=0) * np.linalg.norm(X, axis=1),
                meta=json.dumps(meta))
            paths.append(p)
    return paths


def accuracy(net, x, y):
    with torch.no_grad():
        return float((net.float()(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


CONFIGS = {
    # the MLP: 784-1000-1000-10, 3 epochs
    "mlp1000": dict(width=1000, depth=3, epochs=3),
    # the paper's FCNN: 6 linear layers, width 200, one epoch
    "fcnn200": dict(width=200, depth=6, epochs=1),
    # random init of both, for comparison
    "mlp1000init": dict(width=1000, depth=3, epochs=0),
    "fcnn200init": dict(width=200, depth=6, epochs=0),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--width", type=int)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--tag")
    ap.add_argument("--batches", type=int, nargs="*", default=[20, 50])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--net-seed", type=int, default=0)
    ap.add_argument("--raw", action="store_true", help="pixels in [0, 1] (tag gets suffix 'raw')")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    x, y = load_mnist(a.raw)
    if a.width:
        configs = {a.tag or f"w{a.width}d{a.depth}s{a.steps}": dict(
            width=a.width, depth=a.depth, epochs=a.epochs, steps=a.steps)}
    else:
        configs = {k: v for k, v in CONFIGS.items() if a.only is None or k in a.only}
    for tag, c in configs.items():
        tag = tag + ("raw" if a.raw else "")
        net = make_net(c["width"], c["depth"], a.net_seed)
        secs, steps = 0.0, 0
        if c.get("steps") or c["epochs"]:
            secs, steps = train(net, x[:N_TRAIN], y[:N_TRAIN], epochs=c["epochs"],
                                steps=c.get("steps"), seed=a.net_seed)
        meta = dict(c, tag=tag, raw=a.raw, steps=steps, train_seconds=secs, net_seed=a.net_seed,
                    acc_heldout=accuracy(net, x[N_TRAIN:], y[N_TRAIN:]))
        paths = fixtures_for(net, tag, x, y, a.batches, a.seeds, meta)
        print(json.dumps(meta), "->", len(paths), "fixtures", flush=True)


if __name__ == "__main__":
    main()
