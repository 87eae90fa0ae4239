"""FedAvg with McMahan's CNN on Fashion-MNIST split non-IID across 100 clients.

The 60,000 Fashion-MNIST training images are spread over ``--clients``
simulated clients with a Dirichlet(``--alpha``) label split (Hsu et al. 2019):
at alpha 0.3 most clients hold two or three clothing classes and sizes vary.
Each round the server samples ``--per-round`` clients, each trains the CNN of
McMahan et al. 2017 (two 5x5 conv layers, 32 and 64 channels, a 512-unit dense
layer; 1.66 M parameters) for ``--epochs`` local epochs of SGD, and FedAvg
averages their updates weighted by example count. After every round the
global model is evaluated on the 10,000 held-out test images.

Expected outcome with the defaults (15 rounds, 10 of 100 clients per round,
one local epoch of SGD at lr 0.05, batch 32, seed 0): test accuracy 0.370
after round 1, 0.726 after round 6 and 0.782 after round 15 (0.794 after
round 20); it wobbles from round to round because each round's ten clients
see only a few classes each. On an otherwise idle 2-core machine the 15
rounds took 124 s of wall time, 52 s of it evaluating the 10,000 test images
after every round. The default ``processes`` backend trains clients in
single-threaded worker processes; when other jobs shared the 2 cores it was
several times faster than ``sequential`` with two intra-op threads (which
lose much of their time waiting for each other).

    python examples/fashion_mnist_cnn.py
    python examples/fashion_mnist_cnn.py --rounds 100 --epochs 5
    python examples/fashion_mnist_cnn.py --rounds 2 --clients 20 --limit-train 4000   # quick

Data: the Debian package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
or ``--data DIR`` / ``$FEDFORGE_FASHION_MNIST_DIR``. The last line printed is
``RESULT {json}`` for scripts and tests.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge.data import dirichlet, fashion_mnist, partition_labels, split_by_partition
from fedforge.models import cnn


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--rounds", type=int, default=15, help="federated rounds")
    p.add_argument("--clients", type=int, default=100, help="number of simulated clients")
    p.add_argument("--per-round", type=int, default=10, help="clients sampled each round")
    p.add_argument("--alpha", type=float, default=0.3, help="Dirichlet label concentration")
    p.add_argument("--epochs", type=int, default=1, help="local epochs per round")
    p.add_argument("--batch-size", type=int, default=32, help="local mini-batch size")
    p.add_argument("--lr", type=float, default=0.05, help="local SGD learning rate")
    p.add_argument(
        "--limit-train",
        type=int,
        default=None,
        metavar="N",
        help="use a random subset of N training images (quick runs)",
    )
    p.add_argument(
        "--limit-test",
        type=int,
        default=None,
        metavar="N",
        help="evaluate on a random subset of N test images (default: all 10,000)",
    )
    p.add_argument(
        "--backend",
        choices=("sequential", "processes"),
        default="processes",
        help="processes: a pool of single-threaded workers, one per core (fastest on a CPU); "
        "sequential: one client at a time in this process (bit-reproducible, easy to debug)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes for --backend processes (default: one per CPU core)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads in this process (default: torch's choice)",
    )
    p.add_argument("--data", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--seed", type=int, default=0, help="seed for split, model and training")
    return p.parse_args(argv)


def _subset(ds: TensorDataset, n: int | None, seed: int) -> TensorDataset:
    if n is None or n >= len(ds):
        return ds
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(len(ds))[:n]))
    return TensorDataset(*(t[idx] for t in ds.tensors))


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    train, test = fashion_mnist(args.data)
    train = _subset(train, args.limit_train, args.seed)
    test = _subset(test, args.limit_test, args.seed + 1)
    parts = dirichlet(partition_labels(train), args.clients, args.alpha, seed=args.seed)
    data = split_by_partition(train, parts, seed=args.seed)
    sizes = np.array([len(p) for p in parts])
    print(
        f"Fashion-MNIST: {len(train)} training images over {args.clients} clients "
        f"(Dirichlet alpha={args.alpha}; sizes min/median/max {sizes.min()}/"
        f"{int(np.median(sizes))}/{sizes.max()}), {len(test)} test images"
    )

    torch.manual_seed(args.seed)  # the CNN's initial weights only
    model = cnn(in_channels=1, num_classes=10, image_size=28)
    task = ff.classification()
    clients = {
        cid: ff.TorchClient(
            model,
            cd.train,
            task,
            optimizer=ff.sgd(args.lr),
            epochs=args.epochs,
            batch_size=args.batch_size,
        )
        for cid, cd in data.items()
    }

    evaluate = ff.central_evaluator(model, test, task)
    t_train = time.perf_counter()

    def evaluate_and_report(params: ff.Params) -> ff.EvalResult:
        # The server evaluates right after each round's update; print as we go.
        res = evaluate(params)
        print(
            f"round {server.round:3d}  test accuracy {res.metrics['accuracy']:.4f}  "
            f"test loss {res.loss:.4f}  elapsed {time.perf_counter() - t_train:6.1f} s",
            flush=True,
        )
        return res

    server = ff.Server(
        ff.from_module(model),
        sampler=ff.Sampler(per_round=args.per_round, seed=args.seed),
        optimizer=ff.FedAvg(),
        central_eval=evaluate_and_report,
        seed=args.seed,
    )
    backend = ff.Processes(args.workers) if args.backend == "processes" else ff.Sequential()
    history = server.run(clients, args.rounds, backend=backend, progress=False)
    t_end = time.perf_counter()
    # CPU seconds of this process and of worker processes (reaped when the backend closed):
    # a figure that, unlike wall time, does not grow when other programs share the cores.
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = time.process_time() + children.ru_utime + children.ru_stime

    fit_s = sum(r["fit_time_s"] for r in history)
    eval_s = sum(r["eval_time_s"] for r in history)
    accuracy = history.latest("central_accuracy")
    mb_up = sum(r["bytes_up"] for r in history) / 1e6
    mb_down = sum(r["bytes_down"] for r in history) / 1e6
    print()
    print(f"final test accuracy after {len(history)} rounds: {accuracy:.4f}")
    print(
        f"wall time {t_end - t_start:.1f} s (training {fit_s:.1f} s, evaluation {eval_s:.1f} s, "
        f"data {t_train - t_start:.1f} s) with backend={args.backend}, "
        f"{torch.get_num_threads()} torch thread(s) in the main process"
    )
    print(f"CPU time {cpu_s:.1f} s (all processes)")
    print(f"communication: {mb_down:.1f} MB down, {mb_up:.1f} MB up")

    result = {
        "rounds": len(history),
        "accuracy": accuracy,
        "accuracy_per_round": [r.get("central_accuracy") for r in history],
        "wall_time_s": t_end - t_start,
        "train_time_s": fit_s,
        "eval_time_s": eval_s,
        "cpu_time_s": cpu_s,
        "backend": args.backend,
        "clients": args.clients,
        "per_round": args.per_round,
        "train_examples": len(train),
        "test_examples": len(test),
    }
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
