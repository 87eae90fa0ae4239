"""The ``fedforge`` command line.

fedforge simulate [CONFIG] [--set key=value ...]   train a federation in simulation
fedforge simulate --resume RUN_DIR                 continue an interrupted run
fedforge show RUN_DIR                              the per-round table of a run
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from fedforge.server.history import History, Record

_EXAMPLE = """examples:
  fedforge simulate                                  # built-in default: Fashion-MNIST CNN
  fedforge simulate configs/breast_cancer.toml --set server.rounds=5
  fedforge simulate --resume runs/fashion-mnist-cnn-20261125-101500
  fedforge show runs/fashion-mnist-cnn-20261125-101500
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedforge",
        description="Federated learning: simulate a federation from a config file.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sim = sub.add_parser(
        "simulate",
        help="train a federation in simulation",
        description=(
            "Train a federation in one process (or a local process pool). CONFIG is a TOML "
            "or YAML file; without it the built-in defaults run (Fashion-MNIST CNN, 100 "
            "clients, Dirichlet 0.3, 10 per round). Every run writes a run directory with "
            "the resolved config, metrics (JSONL, CSV, TensorBoard), a plot and checkpoints."
        ),
    )
    sim.add_argument("config", nargs="?", help="TOML or YAML experiment file (default: built-in)")
    sim.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set server.rounds=5 (repeatable)",
    )
    sim.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint (uses its config.yaml)",
    )
    sim.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sim.add_argument(
        "--print-config", action="store_true", help="print the resolved config and exit"
    )

    show = sub.add_parser(
        "show",
        help="print the per-round table of a run directory",
        description="Print the per-round metrics of a run directory as a table.",
    )
    show.add_argument("run_dir", help="a run directory written by `fedforge simulate`")
    from fedforge.transport.cli_commands import add_parsers

    add_parsers(sub)  # server, client, certs, status
    return p


_COLUMNS = {  # record key -> short column header
    "round": "round",
    "aggregated": "agg",
    "train_loss": "train loss",
    "central_loss": "test loss",
    "central_accuracy": "test acc",
    "central_mse": "test mse",
    "federated_accuracy": "fed acc",
    "epsilon": "epsilon",
    "bytes_up": "up",
    "bytes_down": "down",
    "fit_time_s": "fit s",
}


def _bytes(v: object) -> str:
    if not isinstance(v, int | float):
        return ""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if v >= size:
            return f"{v / size:.3g} {unit}"
    return f"{int(v)} B"


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def summary_table(history: History, title: str, max_rows: int = 12) -> None:
    from rich.console import Console
    from rich.table import Table

    records = history.records
    if not records:
        return
    keep = records
    if len(records) > max_rows:
        step = max(1, len(records) // (max_rows - 1))
        keep = records[::step]
        if keep[-1] is not records[-1]:
            keep = [*keep, records[-1]]
    cols = [c for c in _COLUMNS if any(c in r for r in records)]
    table = Table(title=title)
    for c in cols:
        table.add_column(_COLUMNS[c], justify="right")
    table.add_column("dropped", justify="right")
    for r in keep:
        dropped = len(r.get("failed", {})) + len(r.get("rejected", {}))
        cells = [_bytes(r.get(c)) if c.startswith("bytes") else _fmt(r.get(c)) for c in cols]
        table.add_row(*cells, str(dropped))
    Console(stderr=False).print(table)


def _read_history(run_dir: Path) -> History:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl; is it a fedforge run directory?")
    records: list[Record] = [json.loads(line) for line in path.read_text().splitlines() if line]
    return History(records)


def _simulate(args: argparse.Namespace) -> int:
    from fedforge import config as C
    from fedforge.experiment import build, new_run_dir
    from fedforge.server import RunDir

    if args.resume:
        if args.config:
            raise C.ConfigError("give either CONFIG or --resume RUN_DIR, not both")
        run_dir = RunDir(args.resume)
        doc = C.apply_overrides(_yaml(run_dir.read_config()), args.overrides)
        cfg = C.validate(doc)
    else:
        cfg = C.load(args.config, args.overrides)
        run_dir = None
    if args.print_config:
        print(C.dump(cfg), end="")
        return 0
    sim = build(cfg)
    print(f"data: {sim.data.summary()}", file=sys.stderr)
    if run_dir is None:
        run_dir = new_run_dir(cfg)
    else:
        run_dir.write_config(C.dump(cfg))
        if not sim.server.resume_from(run_dir):
            print(f"{run_dir.path}: no checkpoint yet, starting from round 1", file=sys.stderr)
        elif sim.server.round >= cfg.server.rounds:
            print(f"{run_dir.path} already finished {sim.server.round} rounds", file=sys.stderr)
    print(f"run directory: {run_dir.path}", file=sys.stderr)
    history = sim.server.run(
        sim.clients,
        cfg.server.rounds,
        backend=sim.backend,
        run_dir=run_dir,
        checkpoint_every=cfg.run.checkpoint_every,
        keep_checkpoints=cfg.run.keep_checkpoints,
        progress=not args.no_progress,
    )
    summary_table(history, f"{cfg.name}: {len(history)} rounds")
    _print_reputation(history)
    if sim.server.stopped:
        print(f"stopped early: {sim.server.stopped}", file=sys.stderr)
    print(f"metrics, plot and checkpoints in {run_dir.path}", file=sys.stderr)
    return 0


def _print_reputation(history: History) -> None:
    """Who was rejected, excluded or down-weighted, when anyone was."""
    from fedforge.aggregate import Reputation, reputation_table

    if any(r.get("rejected") or r.get("aggregator_shares") for r in history):
        print("\nparticipants flagged by validation or the aggregator:")
        print(reputation_table(Reputation.from_history(history), limit=20))


def _yaml(text: str) -> dict[str, object]:
    import yaml

    doc = yaml.safe_load(text)
    return doc if isinstance(doc, dict) else {}


def _show(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    history = _read_history(run_dir)
    summary_table(history, str(run_dir), max_rows=10_000)
    _print_reputation(history)
    return 0


_LAST_COMMAND: str | None = None


def main(argv: Sequence[str] | None = None) -> int:
    from fedforge.config import ConfigError

    args = _parser().parse_args(argv)
    global _LAST_COMMAND
    _LAST_COMMAND = args.command
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handlers = {"simulate": _simulate, "show": _show}
    try:
        if args.command in handlers:
            return handlers[args.command](args)
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"fedforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedforge: interrupted; resume with --resume RUN_DIR", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``fedforge`` console script: ``main``, then exit (see ``exit_after_client``)."""
    from fedforge.transport.cli_commands import exit_after_client

    code = main()
    exit_after_client(_LAST_COMMAND, code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
