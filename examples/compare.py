"""A site federation against centralized training and against each site alone, on the same rows.

Given a federation config whose sites bring their own files (``[federation] sites``),
this trains the same model from the same initial weights three ways:

* federated: the federation exactly as ``fedforge simulate`` runs it (FedAvg or whatever
  ``[server]`` says), for ``server.rounds`` rounds of ``client.epochs`` local epochs;
* centralized: the same local training (optimizer, learning rate, batch size) on the
  pooled training rows of every site, for ``rounds x epochs`` passes over them, as one
  data owner holding everything would;
* each site alone: the same, on that site's training rows only, for as many passes.

Each is then evaluated on the same held-out rows: the union of every site's held-out
split (``data.eval_fraction``), which is what the federation's own evaluation reports as
``federated_<metric>`` (checked here: the federated row equals the run's last record).
Every row is encoded with the federation's preprocessing, computed from the sites' sums,
which equals the statistics of the pooled training rows (``fedforge.data.site_data``).
Seeded by the config's ``seed``: the same command prints the same table.

    python examples/finance/prepare.py
    python examples/compare.py examples/finance/federation.toml
    python examples/compare.py examples/iot/federation.toml --rounds 10

It prints a markdown table (one row per way of training, one column per
``[evaluation] metrics``) and, last, ``RESULT {json}`` for scripts and tests.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from fedforge import config as C
from fedforge.client import evaluate_model
from fedforge.client.types import RoundInfo
from fedforge.data import ClientData, dataset_size
from fedforge.experiment import Simulation, build, torch_client
from fedforge.params import Params, add, clone, from_module, load_into
from fedforge.seeding import derive_seed


def pool(parts: Sequence[Dataset[Any] | None]) -> TensorDataset:
    """Several sites' examples (a site's data is a ``TensorDataset``) as one set, in site order."""
    sets = [p for p in parts if isinstance(p, TensorDataset)]
    if len(sets) != len(parts):
        raise SystemExit("every site needs held-out rows: set data.eval_fraction > 0")
    return TensorDataset(*(torch.cat(ts) for ts in zip(*(p.tensors for p in sets), strict=True)))


def measure(sim: Simulation, params: Params, heldout: TensorDataset) -> dict[str, float]:
    """The configured metrics of ``params`` over ``heldout``."""
    load_into(sim.model, params)
    result = evaluate_model(sim.model, heldout, sim.task)
    return {k: v for k, v in result.metrics.items() if k in sim.task.metrics.names}


def train_on(sim: Simulation, init: Params, train: Dataset[Any], passes: int, name: str) -> Params:
    """The federation's local training, run once for ``passes`` epochs over ``train`` (without
    FedProx's pull towards the round's global model: here there is none)."""
    cfg = sim.config
    local = cfg.client.model_copy(update={"epochs": passes, "prox_mu": 0.0})
    client = torch_client(local, sim.model, ClientData(train, None), sim.task)
    fit = client.fit(clone(init), RoundInfo(round=1, seed=derive_seed(cfg.seed, "compare", name)))
    return add(init, fit.update)


def compare(config: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    cfg = C.load(config, list(overrides))
    if not cfg.site_data:
        raise SystemExit(f"{config}: compare.py needs a federation whose sites bring their files")
    if cfg.client.steps is not None:
        raise SystemExit("compare.py counts passes over the data: set client.epochs, not steps")
    if cfg.backend.threads:
        torch.set_num_threads(cfg.backend.threads)
    sim = build(cfg)
    init = clone(from_module(sim.model))
    sites = sim.data.clients
    heldout = pool([cd.test for cd in sites.values()])
    rounds, passes = cfg.server.rounds, cfg.server.rounds * cfg.client.epochs

    start = time.perf_counter()
    history = sim.server.run(sim.clients, rounds, backend=sim.backend, progress=False)
    results = {"federated": measure(sim, sim.server.params, heldout)}
    reported = {
        k.removeprefix("federated_"): v
        for k, v in history.last.items()
        if k.startswith("federated_") and k != "federated_loss"
    }
    if not math.isclose(reported["accuracy"], results["federated"]["accuracy"], abs_tol=1e-9):
        raise SystemExit(f"the federation reported {reported}, the held-out rows give {results}")
    trains = {sid: cd.train for sid, cd in sites.items()}
    pooled = pool(list(trains.values()))
    results["centralized"] = measure(sim, train_on(sim, init, pooled, passes, "pooled"), heldout)
    for sid, train in trains.items():
        params = train_on(sim, init, train, passes, sid)
        results[f"{sid} alone"] = measure(sim, params, heldout)
    seconds = time.perf_counter() - start

    sizes = {"federated": len(pooled), "centralized": len(pooled)}
    sizes.update({f"{sid} alone": dataset_size(t) for sid, t in trains.items()})
    names = list(sim.task.metrics.names)
    print(
        f"{cfg.name}: {len(sites)} sites, {rounds} rounds x {cfg.client.epochs} local epoch(s) "
        f"= {passes} passes; evaluated on the {len(heldout)} held-out rows of all sites\n"
    )
    print("| trained | train rows | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for row, values in results.items():
        cells = " | ".join(f"{values[n]:.3f}" for n in names)
        print(f"| {row} | {sizes[row]} | {cells} |")
    result = {
        "config": str(config),
        "rounds": rounds,
        "passes": passes,
        "heldout_rows": len(heldout),
        "train_rows": sizes,
        "metrics": results,
        "federation_reported": reported,
        "seconds": round(seconds, 1),
    }
    print("\nRESULT " + json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="a federation config with [federation] sites")
    p.add_argument("--rounds", type=int, help="override server.rounds")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, as fedforge simulate --set (repeatable)",
    )
    args = p.parse_args(argv)
    overrides = [*args.overrides, *([f"server.rounds={args.rounds}"] if args.rounds else [])]
    try:
        compare(args.config, overrides)
    except C.ConfigError as exc:
        sys.exit(f"compare.py: {exc}")


if __name__ == "__main__":
    main()
