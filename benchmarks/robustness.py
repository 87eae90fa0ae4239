"""Byzantine robustness on Fashion-MNIST: test accuracy for each attack x each aggregator.

Setup (defaults): 50 participants, a seeded 10 of them malicious, a Dirichlet
(alpha = 0.5) label-skewed split of the 60,000 training images, all 50
participating in every round. The model is multinomial logistic regression on
the 784 normalized pixels (cheap enough for the whole grid on two CPU cores);
each participant runs ``--local-steps`` SGD steps per round and the server
applies the aggregate with FedAvg (server learning rate 1). The figure is the
central test accuracy (10,000 images) after ``--rounds`` rounds.

Attacks (20% malicious): sign flip, scaling x100, Gaussian noise, label
flipping (y -> 9 - y), ALIE (Baruch et al. 2019, z from their formula for
n = 50, f = 10) and IPM (Xie et al. 2019). Model-poisoning attacks run
server-side through ``UnderAttack``, so the omniscient ones see the round's
honest updates; label flipping poisons the malicious participants' data.

A second table reads the per-participant shares the robust aggregators report
(``Reputation``): the malicious participants' mean share relative to an equal
share (0 = always excluded, 1 = treated like everyone else).

Run:  python benchmarks/robustness.py [--rounds 20] [--clients 50] [--malicious 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge.aggregate import (
    Aggregator,
    Bulyan,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    MultiKrum,
    NormClip,
    Reputation,
    TrimmedMean,
    WeightedMean,
)
from fedforge.attacks import (
    ALIE,
    IPM,
    Attack,
    GaussianNoise,
    Scale,
    SignFlip,
    UnderAttack,
    alie_z,
    choose_malicious,
    flip_labels,
)
from fedforge.backends import Backend, ClientFailure, Sequential
from fedforge.client import Client, central_evaluator, classification
from fedforge.data import dirichlet, fashion_mnist, partition_labels, split_by_partition
from fedforge.models import logistic_regression
from fedforge.params import ClientId, from_module

RESULTS = Path(__file__).parent / "results" / "robustness.md"
NUM_CLASSES = 10
SHARES_NOTE = (
    "Malicious participants' mean share of the aggregate relative to an equal share "
    "(1/participants), from the aggregators' reports via `Reputation`: 0 = always excluded, "
    "1 = treated like everyone; '-' where the rule reports no shares (FedAvg)."
)


@dataclass(frozen=True)
class Scenario:
    """An attack: a model-poisoning ``Attack`` run by ``UnderAttack``, or label flipping."""

    name: str
    attack: Attack | None = None
    flip_labels: bool = False
    defensible: bool = True  # does the literature expect some defense here to hold?


def scenarios(ipm_epsilons: list[float], noise_std: float) -> list[Scenario]:
    return [
        Scenario("clean"),
        Scenario("sign flip", SignFlip()),
        Scenario("scaling x100", Scale(100.0)),
        Scenario(f"gaussian (std {noise_std:g})", GaussianNoise(noise_std)),
        Scenario("label flip", flip_labels=True),
        Scenario("ALIE", ALIE(), defensible=False),
        *(Scenario(f"IPM (eps {e:g})", IPM(e), defensible=False) for e in ipm_epsilons),
    ]


def aggregators(f: int, trim: float, bound: float) -> dict[str, Aggregator]:
    return {
        "FedAvg": WeightedMean(),
        "median": CoordinateMedian(),
        f"trimmed mean ({trim:g})": TrimmedMean(trim),
        "Krum": Krum(f),
        "Multi-Krum": MultiKrum(f),
        "Bulyan": Bulyan(f),
        f"norm bound ({bound:g})": NormClip(bound),
        "geometric median": GeometricMedian(),
    }


def _flat(ds: TensorDataset) -> TensorDataset:
    x, y = ds.tensors
    return TensorDataset(x.reshape(len(x), -1), y)


class BatchedSoftmaxSGD:
    """A backend that runs ``TorchClient``'s local training for softmax regression, all
    participants of a round at once as one batched tensor program.

    Same math as ``TorchClient(logistic_regression, optimizer=sgd(lr), steps, batch_size)``:
    each participant draws exactly the batches ``iterate_steps`` draws from a generator
    seeded by its ``RoundInfo.seed`` (a short last batch of an epoch included, via a
    mask) and takes ``steps`` SGD steps on the mean cross-entropy. Only the Python
    overhead per participant (~5 ms a round) is gone, which on a shared two-core
    machine is most of the benchmark's time. ``--torch-clients`` runs the real thing.
    """

    name = "batched-softmax-sgd"

    def __init__(self, data: Mapping[ClientId, TensorDataset], lr: float, steps: int, batch: int):
        ids = sorted(data)
        self.x = torch.cat([data[c].tensors[0] for c in ids])  # (N, features)
        self.y = torch.cat([data[c].tensors[1] for c in ids])  # (N,)
        sizes = [len(data[c]) for c in ids]
        starts = torch.tensor([0, *sizes[:-1]]).cumsum(0).tolist()
        self.where = {c: (o, n) for c, o, n in zip(ids, starts, sizes, strict=True)}
        self.lr, self.steps, self.batch = lr, steps, batch

    def start(self, clients: Mapping[ClientId, Client]) -> None:
        if set(clients) - set(self.where):
            raise ValueError("the batched backend holds no data for some clients")

    def _batches(self, cid: ClientId, seed: int) -> list[Tensor]:
        """The global example indices of each local step, exactly as ``iterate_steps`` orders them."""
        offset, n = self.where[cid]
        gen = torch.Generator().manual_seed(seed)
        out: list[Tensor] = []
        while len(out) < self.steps:
            order = torch.randperm(n, generator=gen) + offset
            out += list(order.split(self.batch))[: self.steps - len(out)]
        return out

    def fit(
        self, jobs: Sequence[tuple[ClientId, ff.RoundInfo]], params: ff.Params
    ) -> Iterator[tuple[ClientId, ff.FitResult | ClientFailure]]:
        k, b, steps = len(jobs), self.batch, self.steps
        idx = torch.zeros(k, steps, b, dtype=torch.long)
        mask = torch.zeros(k, steps, b)  # 1/|batch| on real rows, 0 on padding
        for i, (cid, info) in enumerate(jobs):
            for s, batch in enumerate(self._batches(cid, info.seed)):
                idx[i, s, : len(batch)] = batch
                mask[i, s, : len(batch)] = 1.0 / len(batch)
        w0, b0 = params["weight"], params["bias"]  # (classes, features), (classes,)
        w = w0.expand(k, *w0.shape).clone()  # (clients, classes, features)
        bias = b0.expand(k, *b0.shape).clone()  # (clients, classes)
        losses = torch.zeros(k)
        for s in range(steps):
            x, y, m = self.x[idx[:, s]], self.y[idx[:, s]], mask[:, s]  # (k, b, f), (k, b), (k, b)
            logits = torch.baddbmm(bias.unsqueeze(1), x, w.transpose(1, 2))  # (k, b, classes)
            logp = torch.log_softmax(logits, dim=-1)
            losses -= (logp.gather(-1, y.unsqueeze(-1)).squeeze(-1) * m).sum(dim=1)
            grad = logp.exp()
            grad.scatter_add_(-1, y.unsqueeze(-1), -torch.ones_like(grad[..., :1]))
            grad *= m.unsqueeze(-1)  # d(mean loss)/d(logits), zero on padding
            w -= self.lr * torch.bmm(grad.transpose(1, 2), x)
            bias -= self.lr * grad.sum(dim=1)
        for i, (cid, _) in enumerate(jobs):
            update = {"weight": w[i] - w0, "bias": bias[i] - b0}
            metrics = {"train_loss": float(losses[i]) / steps, "local_steps": float(steps)}
            yield cid, ff.FitResult(update, self.where[cid][1], metrics)

    def evaluate(
        self, jobs: Sequence[tuple[ClientId, ff.RoundInfo]], params: ff.Params
    ) -> Iterator[tuple[ClientId, ff.EvalResult | ClientFailure]]:
        for cid, _ in jobs:
            yield cid, ClientFailure("the batched benchmark backend does not evaluate locally")

    def close(self) -> None:
        pass


@dataclass
class Federation:
    model: torch.nn.Module
    data: dict[ClientId, TensorDataset]
    flipped: dict[ClientId, TensorDataset]  # the malicious participants' labels mirrored
    central: Callable[[ff.Params], ff.EvalResult]
    malicious: frozenset[ClientId]
    _batched: dict[bool, BatchedSoftmaxSGD] = field(default_factory=dict)

    def clients(self, args: argparse.Namespace, flipped: bool) -> dict[ClientId, Client]:
        data = self.flipped if flipped else self.data
        return {
            cid: ff.TorchClient(
                self.model,
                ds,
                classification(),
                optimizer=ff.sgd(args.lr),
                steps=args.local_steps,
                batch_size=args.batch_size,
            )
            for cid, ds in data.items()
        }

    def backend(self, args: argparse.Namespace, flipped: bool) -> Backend:
        if args.torch_clients:
            return Sequential()
        if flipped not in self._batched:  # stateless between runs: build once per data set
            data = self.flipped if flipped else self.data
            self._batched[flipped] = BatchedSoftmaxSGD(
                data, args.lr, args.local_steps, args.batch_size
            )
        return self._batched[flipped]


def build(args: argparse.Namespace) -> Federation:
    train, test = fashion_mnist()
    train, test = _flat(train), _flat(test)
    labels = partition_labels(train)
    parts = dirichlet(labels, args.clients, args.alpha, seed=args.seed, min_size=10)
    data = {cid: cd.train for cid, cd in split_by_partition(train, parts, seed=args.seed).items()}
    torch.manual_seed(args.seed)
    model = logistic_regression(28 * 28, NUM_CLASSES)
    malicious = choose_malicious(data, args.malicious / args.clients, seed=args.seed)
    flipped = {
        cid: flip_labels(ds, NUM_CLASSES) if cid in malicious else ds for cid, ds in data.items()
    }
    central = central_evaluator(model, test, classification())
    return Federation(model, data, flipped, central, malicious)  # type: ignore[arg-type]


def run_one(
    fed: Federation,
    init: ff.Params,
    clients: Mapping[ClientId, Client],
    backend: Backend,
    aggregator: Aggregator,
    rounds: int,
    seed: int,
) -> tuple[float, ff.History]:
    server = ff.Server(
        init,
        sampler=ff.Sampler(per_round=len(clients), seed=seed),
        aggregator=aggregator,
        central_eval=fed.central,
        eval_plan=ff.EvalPlan(every=rounds),
        seed=seed,
    )
    history = server.run(clients, rounds, backend=backend, progress=False)
    acc = history.latest("central_accuracy")
    return (float("nan") if acc is None else acc), history


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}; {os.cpu_count()} logical cores (load avg {load:.1f} at start); "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s); "
        f"Python {platform.python_version()}; {platform.system()} {platform.release()}"
    )


def _cell(acc: float) -> str:
    return "diverged" if acc != acc else f"{100 * acc:.1f}"


def table(
    results: dict[str, dict[str, float]], aggs: list[str], scen: list[Scenario], clean_best: float
) -> str:
    head = "| attack | " + " | ".join(aggs) + " | best defense | vs clean |"
    rule = "|---|" + "---:|" * len(aggs) + "---|---:|"
    lines = [head, rule]
    for s in scen:
        row = results[s.name]
        defended = {a: v for a, v in row.items() if a != "FedAvg" and v == v}
        best = max(defended, key=lambda a: defended[a]) if defended else "-"
        best_acc = defended.get(best, float("nan"))
        gap = 100 * (best_acc - clean_best) if s.name != "clean" else 0.0
        cells: list[str] = []
        for a in aggs:
            text = _cell(row[a])
            cells.append(f"**{text}**" if a == best and s.name != "clean" else text)
        verdict = f"{gap:+.1f}" if gap == gap else "-"
        if s.name != "clean" and gap < -3:
            verdict += " (not defended" + (
                "; known to beat these rules)" if not s.defensible else ")"
            )
        lines.append(f"| {s.name} | " + " | ".join(cells) + f" | {best} | {verdict} |")
    return "\n".join(lines)


def malicious_share(history: ff.History, malicious: frozenset[ClientId]) -> float:
    """Mean over the attackers of their mean share relative to an equal share; NaN if unreported."""
    rep = Reputation.from_history(history)
    seen = [rep.standing(c) for c in malicious if rep.standing(c).aggregated]
    return sum(s.mean_relative_share for s in seen) / len(seen) if seen else float("nan")


def share_table(shares: dict[str, dict[str, float]], aggs: list[str], scen: list[Scenario]) -> str:
    lines = ["| attack | " + " | ".join(aggs) + " |", "|---|" + "---:|" * len(aggs)]
    for s in scen:
        if s.name == "clean":
            continue
        row = shares[s.name]
        cells = ["-" if row[a] != row[a] else f"{row[a]:.2f}" for a in aggs]
        lines.append(f"| {s.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--malicious", type=int, default=10)
    p.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    p.add_argument("--local-steps", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.1, help="client SGD learning rate")
    p.add_argument("--trim", type=float, default=None, help="trimmed-mean beta (default f/n)")
    p.add_argument("--norm-bound", type=float, default=1.0, help="NormClip L2 bound")
    p.add_argument("--ipm-epsilon", type=float, nargs="+", default=[0.1, 10.0])
    p.add_argument("--noise-std", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument(
        "--torch-clients",
        action="store_true",
        help="train with TorchClient one participant at a time (slow) instead of the batched backend",
    )
    p.add_argument("--only-attacks", nargs="*", default=None, help="scenario names to run")
    p.add_argument("--only-aggregators", nargs="*", default=None, help="aggregator names to run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if not 0 <= args.malicious < args.clients:
        p.error("--malicious must be in [0, --clients)")
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    fed = build(args)
    malicious = fed.malicious
    init = from_module(fed.model)
    f = args.malicious
    trim = args.trim if args.trim is not None else f / args.clients
    aggs = aggregators(f, trim, args.norm_bound)
    scen = scenarios(args.ipm_epsilon, args.noise_std)
    if args.only_attacks:
        scen = [s for s in scen if any(s.name.startswith(x) for x in args.only_attacks)]
    agg_names = [
        a
        for a in aggs
        if not args.only_aggregators or any(a.startswith(x) for x in args.only_aggregators)
    ]
    print(f"# Byzantine robustness on Fashion-MNIST\n\nmachine: {machine_info()}")
    print(
        f"setup: {args.clients} participants ({len(malicious)} malicious, all in every round), "
        f"Dirichlet alpha {args.alpha}, logistic regression (784 -> 10), {args.rounds} rounds x "
        f"{args.local_steps} local SGD steps (batch {args.batch_size}, lr {args.lr}), FedAvg server step; "
        f"ALIE z = {alie_z(args.clients, f):.3f}\n",
        flush=True,
    )

    results: dict[str, dict[str, float]] = {}
    shares: dict[str, dict[str, float]] = {}
    for s in scen:
        results[s.name], shares[s.name] = {}, {}
        for a in agg_names:
            agg = aggs[a]
            clients = fed.clients(args, s.flip_labels)
            backend = fed.backend(args, s.flip_labels)
            if s.attack is not None:
                agg = UnderAttack(agg, s.attack, malicious, seed=args.seed)
            t0 = time.perf_counter()
            share = float("nan")
            try:
                acc, history = run_one(fed, init, clients, backend, agg, args.rounds, args.seed)
                share = malicious_share(history, malicious)
            except ValueError as err:  # e.g. a rule refusing the round size
                print(f"  {s.name:>20} | {a:<22} refused: {err}", flush=True)
                acc = float("nan")
            results[s.name][a], shares[s.name][a] = acc, share
            print(
                f"  {s.name:>20} | {a:<22} acc {_cell(acc):>8}  ({time.perf_counter() - t0:.1f} s)",
                flush=True,
            )

    clean = results.get("clean", {})
    clean_best = max((v for v in clean.values() if v == v), default=float("nan"))
    md = table(results, agg_names, scen, clean_best)
    md_shares = share_table(shares, agg_names, scen)
    elapsed = time.perf_counter() - t_start
    note = (
        "\nCentral test accuracy (%) after the last round. Bold: the best defense per attack; "
        "'vs clean' is its gap to the best clean accuracy. \"diverged\": the model became NaN/Inf. "
        f"Total time {elapsed / 60:.1f} min."
    )
    trainer = (
        "TorchClient, one participant at a time (--torch-clients)"
        if args.torch_clients
        else "BatchedSoftmaxSGD, TorchClient's SGD math for all participants at once"
    )
    text = (
        f"# Byzantine robustness on Fashion-MNIST\n\nmachine: {machine_info()}\n\n"
        f"{args.clients} participants ({len(malicious)} malicious), Dirichlet alpha {args.alpha}, "
        f"logistic regression, {args.rounds} rounds x {args.local_steps} local steps "
        f"(batch {args.batch_size}, lr {args.lr}); trimmed-mean beta {trim:g}, norm bound "
        f"{args.norm_bound:g}, Krum/Multi-Krum/Bulyan f = {f}, ALIE z = {alie_z(args.clients, f):.3f}, "
        f"seed {args.seed}. Local training: {trainer}.\n\n{md}\n{note}\n\n{SHARES_NOTE}\n\n{md_shares}\n"
    )
    print("\n" + md + "\n" + note + "\n\n" + SHARES_NOTE + "\n\n" + md_shares)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
