"""Privacy / utility: test accuracy at epsilon 1, 3, 8 and infinity (delta = 1e-5).

For each target epsilon the noise multiplier comes from the inverse helper
(``noise_multiplier_for`` / ``calibrate``, RDP accountant), for the rounds
and sampling rates below; the epsilon column is what the accountant reported
after the last round. One seed, one run per row.

Breast cancer (scikit-learn's WDBC, 455 training / 114 test patients), five
hospitals with the label-skewed Dirichlet(0.5) split of
``examples/healthcare_breast_cancer.py``, logistic regression, 20 rounds, all
five hospitals every round:

- participant level (protects a hospital's whole dataset): central DP-FedAvg,
  clip 0.5, fixed denominator 5, q = 1 (no amplification by sampling). With
  five participants the noise std z*S/5 is of the order of the update itself:
  expect near-chance accuracy;
- sample level (protects each patient): DP-SGD inside each hospital (Opacus),
  Poisson batches with rate q <= 0.2 (batch floor(0.2 * hospital size)), 5 steps
  per round (about one epoch), per-example clip 1.0, lr 0.2. Epsilon is the
  worst hospital's, assuming it trains every round.

Fashion-MNIST, participant level: 6,000 participants with 10 training images
each (IID), 100 per round (q = 1/60), 30 rounds, 2 local epochs of SGD
(batch 5, lr 0.1), central DP-FedAvg with clip 1.0 (about half the median
update norm) and fixed denominator 100; multinomial logistic regression on
the 784 pixels (7,850 parameters), cheap enough for two shared cores.

Run:  python benchmarks/privacy_utility.py   (about 10 minutes on 2 shared cores)
Writes benchmarks/results/privacy_utility.md.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dp_accounting as dpa
import torch
from torch.utils.data import TensorDataset

import fedforge as ff
from fedforge.client import Client
from fedforge.data import (
    breast_cancer,
    dirichlet,
    fashion_mnist,
    iid,
    partition_labels,
    split_by_partition,
)
from fedforge.models import logistic_regression
from fedforge.params import from_module
from fedforge.privacy import (
    DPFedAvg,
    DpSgd,
    DPSGDClient,
    PoissonSampling,
    PrivacyAccountant,
    SampleLevel,
    calibrate,
    noise_multiplier_for,
)

DELTA = 1e-5
TARGETS = (1.0, 3.0, 8.0, math.inf)
OUT = Path(__file__).parent / "results" / "privacy_utility.md"


def _run(
    init: dict[str, torch.Tensor],
    clients: Mapping[str, Client],
    central: Callable[..., Any],
    rounds: int,
    per_round: int,
    aggregator: Any = None,
    accountant: PrivacyAccountant | None = None,
    eval_every: int = 5,
) -> tuple[float, float]:
    server = ff.Server(
        init,
        sampler=ff.Sampler(per_round=per_round, seed=0),
        aggregator=aggregator,
        central_eval=central,
        eval_plan=ff.EvalPlan(every=eval_every),
        plugins=[accountant] if accountant is not None else [],
        seed=0,
    )
    history = server.run(clients, rounds, progress=False)
    last = history.last
    return float(last["central_accuracy"]), float(last.get("epsilon", math.inf))


def breast_cancer_rows(rounds: int = 20) -> list[dict[str, Any]]:
    train, test = breast_cancer(0.2, seed=0)
    parts = dirichlet(partition_labels(train), 5, 0.5, seed=0, min_size=10)
    hospitals = split_by_partition(train, parts, seed=0, prefix="hospital")
    torch.manual_seed(0)
    model = logistic_regression(train.tensors[0].shape[1], 2)
    init = from_module(model)
    task = ff.classification()
    central = ff.central_evaluator(model, test, task)
    rows = []
    plain = {
        cid: ff.TorchClient(model, cd.train, task, optimizer=ff.sgd(0.05), batch_size=16)
        for cid, cd in hospitals.items()
    }
    acc, _ = _run(init, plain, central, rounds, 5)
    rows.append(
        dict(
            data="breast cancer",
            level="none (FedAvg)",
            target=math.inf,
            z="-",
            acc=acc,
            eps=math.inf,
            rounds=rounds,
        )
    )
    sampling = PoissonSampling(5, 5)
    for target in TARGETS[:-1]:
        z = noise_multiplier_for(target, rounds, DELTA, sampling)
        dp = DPFedAvg(noise_multiplier=z, clip=0.5, sampling=sampling)
        acc, eps = _run(init, plain, central, rounds, 5, dp, PrivacyAccountant(dp, delta=DELTA))
        rows.append(
            dict(
                data="breast cancer",
                level="participant (DP-FedAvg, q=1)",
                target=target,
                z=f"{z:.2f}",
                acc=acc,
                eps=eps,
                rounds=rounds,
            )
        )
    q, steps = 0.2, 5
    for target in TARGETS[:-1]:
        sigma = calibrate(
            lambda s: dpa.SelfComposedDpEvent(
                dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(s)), steps * rounds
            ),
            target,
            DELTA,
        )
        dpsgd = {
            cid: DPSGDClient(
                model,
                cd.train,
                task,
                DpSgd(sigma, 1.0, max(1, math.floor(q * len(cd.train))), steps),  # type: ignore[arg-type]
                optimizer=ff.sgd(0.2),
                seed=i,
            )
            for i, (cid, cd) in enumerate(hospitals.items())
        }
        acct = PrivacyAccountant(SampleLevel.of(dpsgd.values()), delta=DELTA)
        acc, eps = _run(init, dpsgd, central, rounds, 5, None, acct)
        rows.append(
            dict(
                data="breast cancer",
                level="sample (DP-SGD, q~0.2, 5 steps/round)",
                target=target,
                z=f"{sigma:.2f}",
                acc=acc,
                eps=eps,
                rounds=rounds,
            )
        )
    return rows


def fashion_rows(
    rounds: int = 30, population: int = 6000, per_round: int = 100
) -> list[dict[str, Any]]:
    train, test = fashion_mnist()
    x = train.tensors[0].reshape(len(train), -1)
    y = train.tensors[1]
    test = TensorDataset(test.tensors[0].reshape(len(test), -1), test.tensors[1])
    torch.manual_seed(0)
    model = logistic_regression(784, 10)
    init = from_module(model)
    task = ff.classification()
    central = ff.central_evaluator(model, test, task)
    clients = {
        f"p{i:05d}": ff.TorchClient(
            model,
            TensorDataset(x[torch.as_tensor(p)], y[torch.as_tensor(p)]),
            task,
            optimizer=ff.sgd(0.1),
            epochs=2,
            batch_size=5,
        )
        for i, p in enumerate(iid(population * 10, population, 0))
    }
    sampling = PoissonSampling(population, per_round)
    rows = []
    for target in TARGETS:
        t0 = time.perf_counter()
        if math.isinf(target):
            acc, eps = _run(init, clients, central, rounds, per_round, eval_every=rounds)
            z_text = "-"
            level = "none (FedAvg)"
        else:
            z = noise_multiplier_for(target, rounds, DELTA, sampling)
            dp = DPFedAvg(noise_multiplier=z, clip=1.0, sampling=sampling)
            acct = PrivacyAccountant(dp, delta=DELTA)
            acc, eps = _run(init, clients, central, rounds, per_round, dp, acct, eval_every=rounds)
            z_text = f"{z:.3f}"
            level = f"participant (DP-FedAvg, q=1/{population // per_round})"
        print(
            f"fashion-mnist eps {target}: {acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True
        )
        rows.append(
            dict(
                data="Fashion-MNIST",
                level=level,
                target=target,
                z=z_text,
                acc=acc,
                eps=eps,
                rounds=rounds,
            )
        )
    return rows


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.2f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skip-fashion", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows = breast_cancer_rows()
    print(f"breast cancer done ({time.perf_counter() - t0:.0f} s)", flush=True)
    if not args.skip_fashion:
        rows += fashion_rows()
    lines = [
        "| data | DP level | target epsilon | noise multiplier | rounds | epsilon spent (delta 1e-5) | test accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['level']} | {_fmt(r['target'])} | {r['z']} | {r['rounds']} | "
            f"{_fmt(r['eps'])} | {100 * r['acc']:.1f} % |"
        )
    table = "\n".join(lines)
    print(table)
    print(f"total {time.perf_counter() - t0:.0f} s")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(
        "# Privacy / utility\n\nGenerated by `python benchmarks/privacy_utility.py` "
        "(setup in its docstring; one seed).\n\n" + table + "\n"
    )


if __name__ == "__main__":
    main()
