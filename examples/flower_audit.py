"""Audit a Flower federation with spear: a Flower simulation (Ray backend) trains a small MLP on
scikit-learn's digits across several clients, and ``spear.integrations.flower.AuditStrategy``
around FedAvg attacks every client's update in every round.

    pip install -c constraints.txt ".[flower]"
    python examples/flower_audit.py --clients 4 --rounds 3 --out flower-audit

Each client holds its own share of digits; in every round it takes one batch from it and
does ``--local-steps`` plain SGD steps (1: FedSGD-like, the update is lr x gradient and the
audit recovers the batch exactly), then returns its weights, as Flower clients do. At the
end it prints, per round and client, what the audit recovered; ``OUT/index.html`` links every
report, ``OUT/audit.jsonl`` has one line per (round, client, layer).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULTS = {"clients": 4, "rounds": 3, "batch_size": 8, "lr": 0.1, "local_steps": 1, "seed": 0}


def make_net() -> nn.Module:
    """The federation's model (the audit attacks its first layer, which feeds a ReLU)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 10))


def client_batch(partition_id: int, num_partitions: int, server_round: int, batch_size: int,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch client ``partition_id`` trains on in ``server_round``: drawn from its own
    share of digits (every num_partitions-th sample), the same for the same arguments."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    mine = np.arange(partition_id, len(X), num_partitions)
    rng = np.random.default_rng([seed, partition_id, server_round])
    pick = rng.choice(mine, size=batch_size, replace=False)
    return torch.tensor(X[pick] / 16.0, dtype=torch.float32), torch.tensor(y[pick])


def weights_of(net: nn.Module) -> list[np.ndarray]:
    return [v.detach().cpu().numpy().copy() for v in net.state_dict().values()]


def set_weights(net: nn.Module, arrays: list[np.ndarray]) -> None:
    net.load_state_dict({k: torch.from_numpy(np.array(a)) for k, a in zip(net.state_dict(), arrays)})


def client_app(batch_size: int, lr: float, local_steps: int, seed: int):
    """Flower's ClientApp: each node trains on its own partition of digits."""
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context

    class DigitsClient(NumPyClient):
        def __init__(self, partition_id: int, num_partitions: int):
            self.partition_id, self.num_partitions = partition_id, num_partitions
            self.net = make_net()

        def fit(self, parameters, config):
            set_weights(self.net, parameters)
            server_round = int(config["server_round"])
            x, y = client_batch(self.partition_id, self.num_partitions, server_round, batch_size, seed)
            opt = torch.optim.SGD(self.net.parameters(), lr=lr)
            for _ in range(local_steps):
                opt.zero_grad()
                F.cross_entropy(self.net(x), y).backward()
                opt.step()
            return weights_of(self.net), len(x), {"partition_id": self.partition_id}

    def client_fn(context: Context):
        cfg = context.node_config
        return DigitsClient(int(cfg["partition-id"]), int(cfg["num-partitions"])).to_client()

    return ClientApp(client_fn=client_fn)


def run(clients: int, rounds: int, out: str, *, batch_size: int = DEFAULTS["batch_size"], lr: float = DEFAULTS["lr"],
        local_steps: int = DEFAULTS["local_steps"], seed: int = DEFAULTS["seed"], time_limit: float = 60.0,
        workers: int = 2, overwrite: bool = False, verbose: bool = False) -> dict:
    """Run the audited simulation; returns the audit's index (every round's clients)."""
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    from spear.integrations.flower import AuditStrategy

    fedavg = FedAvg(fraction_fit=1.0, min_fit_clients=clients, min_available_clients=clients,
                    fraction_evaluate=0.0, min_evaluate_clients=0,
                    initial_parameters=ndarrays_to_parameters(weights_of(make_net())),
                    on_fit_config_fn=lambda server_round: {"server_round": server_round})
    audit = AuditStrategy(fedavg, make_net(), out, input_shape=(8, 8), workers=workers, time_limit=time_limit,
                          round_budget=None, client_key="partition_id", overwrite=overwrite)

    def server_fn(context):
        return ServerAppComponents(strategy=audit, config=ServerConfig(num_rounds=rounds))

    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"logging_level": logging.INFO if verbose else logging.ERROR, "log_to_driver": verbose}}
    try:
        run_simulation(server_app=ServerApp(server_fn=server_fn),
                       client_app=client_app(batch_size, lr, local_steps, seed),
                       num_supernodes=clients, backend_name="ray", backend_config=backend, verbose_logging=verbose)
    finally:
        index = audit.close()
    return index


def print_report(index: dict, out: str) -> None:
    print(f"\n{'round':>5}  {'client':<6} {'layers':>6}  {'certified':>9}  {'complete':>8}  report")
    for u in index["updates"]:
        # The update label is "round R client ID".
        _, r, _, client = u["update"].split(" ", 3)
        print(f"{r:>5}  {client:<6} {u['layers']:>6}  {u['certified']:>9}  {u['complete']:>8}  {u['report']}")
    failed = index.get("failed", 0)
    print(f"\n{len(index['updates'])} client updates audited{f', {failed} attack(s) failed' if failed else ''}; "
          f"all reports: {Path(out) / 'index.html'}, one line per (round, client, layer): {Path(out) / 'audit.jsonl'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=DEFAULTS["clients"], help="Flower clients (simulated nodes)")
    p.add_argument("--rounds", type=int, default=DEFAULTS["rounds"], help="federated rounds")
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"], help="each client's batch per round")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="the clients' SGD learning rate")
    p.add_argument("--local-steps", type=int, default=DEFAULTS["local_steps"],
                   help="SGD steps per round on the batch (1: the update is lr x gradient; more blur it)")
    p.add_argument("--time-limit", type=float, default=60.0, help="seconds per attacked layer")
    p.add_argument("--workers", type=int, default=2, help="attacks running at once")
    p.add_argument("--out", default="flower-audit", help="output folder (new or empty)")
    p.add_argument("--overwrite", action="store_true", help="empty --out first")
    p.add_argument("--verbose", action="store_true", help="Flower's and Ray's logs")
    a = p.parse_args(argv)
    for name in ("clients", "rounds", "batch_size", "local_steps", "workers"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    try:
        index = run(a.clients, a.rounds, a.out, batch_size=a.batch_size, lr=a.lr, local_steps=a.local_steps,
                    time_limit=a.time_limit, workers=a.workers, overwrite=a.overwrite, verbose=a.verbose)
    except ValueError as e:
        print(f"flower_audit: error: {e}", file=sys.stderr)
        return 2
    print_report(index, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
