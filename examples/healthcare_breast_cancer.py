"""Five hospitals train a breast-cancer classifier together; does it match pooling the data?

The Wisconsin Diagnostic Breast Cancer data (569 patients, 30 features,
malignant / benign) is split into a training and a held-out test split. The
training patients are spread over five "hospitals" with a label-skewed
Dirichlet split (Hsu et al. 2019): some hospitals see mostly benign cases,
others mostly malignant ones, and their sizes differ. The same logistic
regression is then trained twice:

* federated: FedAvg (McMahan et al. 2017); each round every hospital runs
  ``--local-epochs`` epochs of SGD on its own patients and only the model
  update leaves the hospital;
* centralized: the same model, optimizer, learning rate and batch size on the
  union of the very same training patients, for ``rounds * local_epochs``
  epochs, so both see every training example equally often.

Both are evaluated on the same held-out test patients.

Expected outcome with the defaults (50 rounds of one local epoch, SGD at lr
0.2): seed 0 gives 97.4 % federated and 98.2 % centralized test accuracy.
Over seeds 0-29 (each seed draws its own split and hospitals) the means were
98.2 % federated and 97.8 % centralized, and the federated model was never
more than 2 points away: the difference ranged from -0.9 to +1.8 points (on
the 114 test patients one patient is 0.88 points). With too little training (e.g. ``--rounds 20 --lr
0.05``) the federated model lags behind on some seeds: label skew slows FedAvg
down before it converges.

    python examples/healthcare_breast_cancer.py
    python examples/healthcare_breast_cancer.py --alpha 0.1 --seed 3

The last line printed is ``RESULT {json}`` for scripts and tests.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from torch import nn

import fedforge as ff
from fedforge.data import breast_cancer, dirichlet, partition_labels, split_by_partition
from fedforge.models import logistic_regression
from fedforge.params import load_into

CLASSES = ("malignant", "benign")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--hospitals", type=int, default=5, help="number of participating hospitals")
    p.add_argument(
        "--alpha", type=float, default=0.5, help="Dirichlet concentration (smaller: more skewed)"
    )
    p.add_argument("--rounds", type=int, default=50, help="federated rounds")
    p.add_argument("--local-epochs", type=int, default=1, help="local epochs per round")
    p.add_argument("--lr", type=float, default=0.2, help="SGD learning rate (both trainings)")
    p.add_argument("--batch-size", type=int, default=16, help="mini-batch size (both trainings)")
    p.add_argument(
        "--weight-decay", type=float, default=0.0, help="L2 penalty of SGD (both trainings)"
    )
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of patients")
    p.add_argument("--seed", type=int, default=0, help="seed for split, model and training")
    return p.parse_args(argv)


def train_centralized(
    model: nn.Module, train: torch.utils.data.TensorDataset, epochs: int, args: argparse.Namespace
) -> None:
    """Plain mini-batch SGD on the pooled data: what a single data owner would do."""
    opt = ff.sgd(args.lr, weight_decay=args.weight_decay)(model.parameters())
    gen = torch.Generator().manual_seed(args.seed)
    x_all, y_all = train.tensors
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y_all), generator=gen)
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
            loss.backward()
            opt.step()


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.set_num_threads(1)  # a 30x2 model: extra threads only add synchronization overhead
    train, test = breast_cancer(args.test_fraction, seed=args.seed)
    labels = partition_labels(train)
    parts = dirichlet(labels, args.hospitals, args.alpha, seed=args.seed, min_size=10)
    hospitals = split_by_partition(train, parts, seed=args.seed, prefix="hospital")

    print(
        f"{len(train)} training patients over {args.hospitals} hospitals (Dirichlet alpha={args.alpha}),"
    )
    print(f"{len(test)} held-out test patients")
    for cid, part in zip(hospitals, parts, strict=True):
        counts = np.bincount(labels[part], minlength=2)
        print(
            f"  {cid}: {len(part):4d} patients  {CLASSES[0]} {counts[0]:4d}  {CLASSES[1]} {counts[1]:4d}"
        )

    # One initialization, copied into both models, so the comparison starts from the same point.
    torch.manual_seed(args.seed)
    model = logistic_regression(train.tensors[0].shape[1], 2)
    init = ff.from_module(model)
    task = ff.classification()

    clients = {
        cid: ff.TorchClient(
            model,
            cd.train,
            task,
            optimizer=ff.sgd(args.lr, weight_decay=args.weight_decay),
            epochs=args.local_epochs,
            batch_size=args.batch_size,
        )
        for cid, cd in hospitals.items()
    }
    server = ff.Server(
        init,
        sampler=ff.Sampler(per_round=args.hospitals, seed=args.seed),
        optimizer=ff.FedAvg(),
        central_eval=ff.central_evaluator(model, test, task),
        seed=args.seed,
    )
    history = server.run(clients, args.rounds, progress=False)
    for r in history:
        print(
            f"round {r['round']:3d}  train_loss {r['train_loss']:.4f}  "
            f"test_accuracy {r['central_accuracy']:.4f}"
        )
    load_into(model, server.params)
    federated = ff.evaluate_model(model, test, task)

    central_model = logistic_regression(train.tensors[0].shape[1], 2)
    load_into(central_model, init)
    epochs = args.rounds * args.local_epochs
    train_centralized(central_model, train, epochs, args)
    centralized = ff.evaluate_model(central_model, test, task)

    fed_acc = federated.metrics["accuracy"]
    cen_acc = centralized.metrics["accuracy"]
    diff_points = 100.0 * (fed_acc - cen_acc)
    print()
    print(
        f"federated   ({args.hospitals} hospitals, {args.rounds} rounds x {args.local_epochs} local epoch(s)): "
        f"test accuracy {100 * fed_acc:.2f} %  (loss {federated.loss:.4f})"
    )
    print(
        f"centralized (pooled data, {epochs} epochs): "
        f"test accuracy {100 * cen_acc:.2f} %  (loss {centralized.loss:.4f})"
    )
    print(f"federated - centralized: {diff_points:+.2f} accuracy points")

    result = {
        "seed": args.seed,
        "federated_accuracy": fed_acc,
        "centralized_accuracy": cen_acc,
        "difference_points": diff_points,
        "federated_loss": federated.loss,
        "centralized_loss": centralized.loss,
        "test_examples": len(test),
    }
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
