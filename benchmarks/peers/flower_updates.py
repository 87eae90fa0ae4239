"""The Flower side of ``benchmarks/scale_updates.py``: the same workload on Flower 1.42's
Ray simulation, timed the same way, one JSON line on stdout.

Runs in the Flower virtual environment (``benchmarks/peers/flower_env.sh``), never in
fedforge's: Flower pins protobuf<7, fedforge needs protobuf>=7. Nothing from fedforge is
imported; the data, the partition and the initial parameters come from the folder that
``scale_updates.py`` wrote (``--data``), so both frameworks train on the same arrays.

The participant's local training is written to be the same math as fedforge's
``TorchClient``: multinomial logistic regression, ``torch.optim.SGD(lr)``, mean
cross-entropy, one ``torch.randperm`` per epoch from a generator seeded with
``blake2b(run seed / "fit" / round / client id)`` (fedforge's ``derive_seed``, copied
below), batches cut in order with a partial last one. With every participant in every
round (what the benchmark runs) both frameworks then average the same updates, so the
final test accuracy should agree to float rounding; any gap is a bug, not noise.

Flower API used (read from the installed flwr 1.42 sources): ``ClientApp`` with a
``@app.train()`` Message handler, ``ServerApp`` with ``@app.main()`` running
``flwr.serverapp.strategy.FedAvg.start`` (``evaluate_fn`` is called before round 1
and after each round, which is where rounds are timed), and
``flwr.simulation.run_simulation`` with the Ray backend, one CPU per ClientApp actor.

Run:  .peers/flower/bin/python benchmarks/peers/flower_updates.py --data DIR --clients N
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from torch.nn import functional as F

IN_FEATURES, NUM_CLASSES = 784, 10


def derive_seed(seed: int, *names: object) -> int:
    """fedforge.seeding.derive_seed, copied: the same (seed, round, client) -> the same
    batches in both frameworks."""
    text = "/".join([str(seed), *map(str, names)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & (2**63 - 1)


_DATA: dict[str, Any] = {}


def _arrays(folder: str) -> dict[str, Any]:
    """The exported arrays, memory-mapped once per Ray worker process (page cache shared)."""
    if _DATA.get("folder") != folder:
        d = Path(folder)
        _DATA.clear()
        _DATA["folder"] = folder
        for name in ("x_train", "y_train", "parts_index", "parts_offset"):
            _DATA[name] = np.load(d / f"{name}.npy", mmap_mode="r")
    return _DATA


def _model() -> torch.nn.Linear:
    return torch.nn.Linear(IN_FEATURES, NUM_CLASSES)


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    """One participant's local epochs: TorchClient's loop, line for line."""
    torch.set_num_threads(1)
    cfg = msg.content["config"]
    pid = int(context.node_config["partition-id"])
    data = _arrays(str(cfg["data-dir"]))
    lo, hi = int(data["parts_offset"][pid]), int(data["parts_offset"][pid + 1])
    idx = np.asarray(data["parts_index"][lo:hi])
    x = torch.from_numpy(np.ascontiguousarray(data["x_train"][idx]))
    y = torch.from_numpy(np.ascontiguousarray(data["y_train"][idx]))
    n, bs = len(y), int(cfg["batch-size"])
    model = _model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=float(cfg["lr"]))
    seed = derive_seed(int(cfg["seed"]), "fit", int(cfg["server-round"]), f"client{pid:04d}")
    gen = torch.Generator().manual_seed(seed)
    loss_sum, steps = 0.0, 0
    for _ in range(int(cfg["epochs"])):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            b = order[start : start + bs]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[b]), y[b])
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
            steps += 1
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss_sum / steps, "num-examples": n}),
        }
    )
    return Message(content=content, reply_to=msg)


server_app = ServerApp()
RESULT: dict[str, Any] = {}
SETTINGS: dict[str, Any] = {}


def _accuracy(arrays: ArrayRecord, folder: str) -> float:
    d = Path(folder)
    x = torch.from_numpy(np.load(d / "x_test.npy"))
    y = torch.from_numpy(np.load(d / "y_test.npy"))
    model = _model()
    model.load_state_dict(arrays.to_torch_state_dict())
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    s = SETTINGS
    d = Path(s["data"])
    init = {
        "weight": torch.from_numpy(np.load(d / "weight.npy")),
        "bias": torch.from_numpy(np.load(d / "bias.npy")),
    }
    stamps: list[float] = []

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        stamps.append(time.perf_counter())
        if server_round == s["rounds"]:
            t0 = time.perf_counter()
            RESULT["accuracy"] = _accuracy(arrays, s["data"])
            RESULT["eval_s"] = time.perf_counter() - t0
            return MetricRecord({"accuracy": RESULT["accuracy"]})
        return None

    strategy = FedAvg(
        fraction_train=s["per_round"] / s["clients"],
        fraction_evaluate=0.0,
        min_train_nodes=s["per_round"],
        min_available_nodes=s["clients"],
    )
    config = ConfigRecord(
        {
            "data-dir": s["data"],
            "lr": s["lr"],
            "epochs": s["epochs"],
            "batch-size": s["batch_size"],
            "seed": s["seed"],
        }
    )
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(init),
        num_rounds=s["rounds"],
        train_config=config,
        evaluate_fn=evaluate_fn,
    )
    RESULT["round_s"] = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    # Import this file as a module so the ClientApp pickles by reference: Ray workers then
    # import it (their PYTHONPATH is the driver's sys.path) instead of receiving a copy
    # of the function and its globals with every message.
    sys.path.insert(0, str(Path(__file__).parent))
    import flower_updates as me  # noqa: PLC0415

    me.SETTINGS.update(
        data=str(Path(args.data).resolve()),
        clients=args.clients,
        per_round=args.per_round or args.clients,
        rounds=args.rounds,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    logging.getLogger("flwr").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    run_simulation(
        server_app=me.server_app,
        client_app=me.client_app,
        num_supernodes=args.clients,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": args.cpus, "include_dashboard": False},
        },
    )
    total = time.perf_counter() - t0
    rounds = me.RESULT.get("round_s", [])
    per_round = args.per_round or args.clients
    train_s = sum(rounds)
    return {
        "framework": "flower",
        "clients": args.clients,
        "per_round": per_round,
        "rounds": len(rounds),
        "updates": per_round * len(rounds),
        "train_s": train_s,
        "round_s": rounds,
        "updates_per_s": per_round * len(rounds) / train_s if train_s else 0.0,
        "accuracy": me.RESULT.get("accuracy"),
        "total_s": total,
        "versions": {
            "flwr": _version("flwr"),
            "ray": _version("ray"),
            "torch": torch.__version__,
            "python": sys.version.split()[0],
        },
    }


def _version(name: str) -> str:
    from importlib.metadata import version  # noqa: PLC0415

    return version(name)


def main_cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder written by scale_updates.py")
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--per-round", type=int, default=None, help="default: every client")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = p.parse_args()
    out = run(args)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main_cli()
