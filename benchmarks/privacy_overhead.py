"""What server-side DP-FedAvg costs in wall time per round.

Workload: Fashion-MNIST, multinomial logistic regression (7,850 parameters)
on flattened pixels, 200 participants with 60 training images each (IID),
20 per round, each running 1 local epoch of SGD (batch 16). The same round is
timed with FedAvg (``WeightedMean``) and with central DP-FedAvg (clip,
Gaussian noise, fixed denominator) plus the RDP accountant writing epsilon
into every record. Rounds alternate between the two servers (so a busy
shared machine slows both alike) after one warm-up round each; the figure is
the median over ``--rounds`` rounds of the whole round (fit + plugins),
in wall time and in this process' CPU time (less disturbed by other load).

The accountant's first round computes the RDP curve of the round's event
(~0.5 s, printed separately); later rounds reuse it (``accounting.Rdp``).

Run:  python benchmarks/privacy_overhead.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge.data import fashion_mnist, iid
from fedforge.models import logistic_regression
from fedforge.params import from_module
from fedforge.privacy import DPFedAvg, PoissonSampling, PrivacyAccountant


def federation(num_clients: int, per_client: int, seed: int):
    train, _ = fashion_mnist()
    x = train.tensors[0].reshape(len(train), -1)
    y = train.tensors[1]
    parts = iid(num_clients * per_client, num_clients, seed)
    torch.manual_seed(seed)
    model = logistic_regression(784, 10)
    clients = {
        f"c{i:04d}": ff.TorchClient(
            model,
            TensorDataset(x[torch.as_tensor(p)], y[torch.as_tensor(p)]),
            ff.classification(),
            optimizer=ff.sgd(0.05),
            batch_size=16,
        )
        for i, p in enumerate(parts)
    }
    return model, clients


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--per-round", type=int, default=20)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, clients = federation(args.clients, 60, seed=0)
    init = from_module(model)
    sampling = PoissonSampling(args.clients, args.per_round)
    dp = DPFedAvg(noise_multiplier=1.0, clip=1.0, sampling=sampling)
    servers = {
        "fedavg": ff.Server(init, sampler=ff.Sampler(per_round=args.per_round), seed=0),
        "dp_fedavg": ff.Server(
            init,
            sampler=ff.Sampler(per_round=args.per_round),
            aggregator=dp,
            plugins=[PrivacyAccountant(dp, delta=1e-5)],
            seed=0,
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in servers}
    cpu: dict[str, list[float]] = {k: [] for k in servers}
    for k, s in servers.items():  # warm-up round (imports, the accountant's RDP curve)
        t0 = time.perf_counter()
        s.run(clients, 1, progress=False)
        print(f"warm-up round {k:10s} {time.perf_counter() - t0:7.3f} s")
    for r in range(2, args.rounds + 2):
        for k, s in servers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            s.run(clients, r, progress=False)
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    print(f"\n{args.rounds} rounds each, {args.per_round} of {args.clients} participants per round")
    for k in servers:
        ts, cs = times[k], cpu[k]
        print(
            f"{k:10s} wall median {statistics.median(ts) * 1e3:7.1f} ms/round "
            f"(min {min(ts) * 1e3:6.1f})   process CPU median {statistics.median(cs) * 1e3:7.1f} ms"
        )
    for what, d in (("wall", times), ("process CPU", cpu)):
        base, dpt = statistics.median(d["fedavg"]), statistics.median(d["dp_fedavg"])
        paired = statistics.median(b - a for a, b in zip(d["fedavg"], d["dp_fedavg"], strict=True))
        print(
            f"DP-FedAvg overhead ({what}): {100 * (dpt / base - 1):+.1f} % (medians), "
            f"paired median difference {paired * 1e3:+.1f} ms = {100 * paired / base:+.1f} %"
        )
    eps = servers["dp_fedavg"].history.last["epsilon"]
    print(f"(epsilon after {args.rounds + 1} rounds at delta 1e-5, z=1, q={sampling.q}: {eps:.3f})")


if __name__ == "__main__":
    main()
