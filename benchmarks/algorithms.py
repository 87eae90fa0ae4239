"""FedAvg, FedProx, SCAFFOLD and FedNova on heterogeneous Fashion-MNIST: rounds to a stated
accuracy and accuracy after the last round, three seeds each.

Workload (defaults): the 60,000 Fashion-MNIST training images split among 100 participants
by a Dirichlet(0.1) label partition (few classes each, very unequal sizes), 10 sampled per
round, an MLP (784-200-10), 2 local epochs of plain SGD (lr 0.05, batch 32), so local step
counts differ as much as the participants' sizes do (the setting FedNova was made for).
FedProx adds mu = 0.01 (Li et al. 2020); SCAFFOLD (Karimireddy et al. 2020) corrects every
local step with control variates; FedNova (Wang et al. 2020) averages normalized updates.
Each run goes through ``fedforge.experiment.build`` from one config, the path of
``fedforge simulate``; only ``server.algorithm`` and ``client.prox_mu`` differ. Central
accuracy on the 10,000 test images after every round.

Run:  python benchmarks/algorithms.py [--rounds 50] [--seeds 0 1 2] [--target 0.70]
Writes benchmarks/results/algorithms.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from fedforge import config as C
from fedforge.experiment import build

RESULTS = Path(__file__).parent / "results"
ALGORITHMS: dict[str, dict[str, Any]] = {
    "FedAvg": {"server.algorithm": "fedavg"},
    "FedProx (mu 0.01)": {"server.algorithm": "fedavg", "client.prox_mu": 0.01},
    "SCAFFOLD": {"server.algorithm": "scaffold"},
    "FedNova": {"server.algorithm": "fednova"},
}


def config(args: argparse.Namespace, seed: int, setting: dict[str, Any]) -> C.ExperimentConfig:
    raw: dict[str, Any] = {
        "name": "algorithms",
        "seed": seed,
        "data": {
            "dataset": "fashion_mnist",
            "num_clients": args.clients,
            "partition": {"kind": "dirichlet", "alpha": args.alpha},
            "eval_fraction": 0.0,
        },
        "model": {"name": "mlp", "hidden": [200]},
        "client": {"lr": args.lr, "epochs": args.epochs, "batch_size": 32},
        "server": {"rounds": args.rounds, "clients_per_round": args.per_round},
        "backend": {"kind": "processes", "workers": args.workers},
    }
    sets = [f"{k}={v}" for k, v in setting.items()]
    return C.validate(C.apply_overrides(raw, sets))


def run(args: argparse.Namespace, seed: int, setting: dict[str, Any]) -> dict[str, Any]:
    sim = build(config(args, seed, setting))
    t0 = time.perf_counter()
    history = sim.server.run(sim.clients, args.rounds, backend=sim.backend, progress=False)
    wall = time.perf_counter() - t0
    acc = [float(r["central_accuracy"]) for r in history]
    reached = next((i + 1 for i, a in enumerate(acc) if a >= args.target), None)
    steps = [
        len(cd.train) for cd in sim.data.clients.values()  # examples per participant
    ]
    return {
        "seed": seed,
        "accuracy": acc,
        "final": acc[-1],
        "best": max(acc),
        "rounds_to_target": reached,
        "wall_s": wall,
        "sizes": (min(steps), statistics.median(steps), max(steps)),
    }


def table(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> str:
    lines = [
        f"# FedAvg, FedProx, SCAFFOLD, FedNova on Fashion-MNIST, Dirichlet({args.alpha})",
        "",
        f"`python benchmarks/algorithms.py --rounds {args.rounds} --seeds "
        f"{' '.join(map(str, args.seeds))} --target {args.target}`; {args.clients} "
        f"participants, {args.per_round} per round, MLP 784-200-10, {args.epochs} local "
        f"epochs of SGD (lr {args.lr}, batch 32), processes backend ({args.workers} workers); "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}.",
        "",
        f"| algorithm | rounds to {args.target:.0%} (per seed) | final accuracy "
        "(mean ± sd) | per seed | best | time per run |",
        "|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        finals = [r["final"] for r in runs]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        reach = ", ".join(str(r["rounds_to_target"] or f">{args.rounds}") for r in runs)
        lines.append(
            f"| {name} | {reach} | {statistics.mean(finals):.4f} ± {sd:.4f} | "
            f"{' / '.join(f'{f:.4f}' for f in finals)} | "
            f"{statistics.mean(r['best'] for r in runs):.4f} | "
            f"{statistics.mean(r['wall_s'] for r in runs):.0f} s |"
        )
    sizes = next(iter(results.values()))[0]["sizes"]
    lines += [
        "",
        f"Participants hold {sizes[0]} to {sizes[2]} training images (median {sizes[1]:g}), "
        f"so {args.epochs} epochs are between {args.epochs} and "
        f"{args.epochs * -(-sizes[2] // 32)} local steps.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--target", type=float, default=0.70)
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--per-round", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--only", nargs="+", choices=list(ALGORITHMS), default=list(ALGORITHMS))
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    results: dict[str, list[dict[str, Any]]] = {}
    for name in args.only:
        for seed in args.seeds:
            r = run(args, seed, ALGORITHMS[name])
            results.setdefault(name, []).append(r)
            print(
                f"{name:18s} seed {seed}: final {r['final']:.4f}, best {r['best']:.4f}, "
                f"rounds to {args.target:.0%}: {r['rounds_to_target']}, {r['wall_s']:.0f} s",
                flush=True,
            )
    text = table(results, args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "algorithms.md").write_text(text)
    (args.out / "algorithms.json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
