"""The simulation subcommands: ``fedforge simulate`` and ``fedforge show``.

fedforge simulate [CONFIG] [--set key=value ...]   train a federation in simulation
fedforge simulate --resume RUN_DIR                 continue an interrupted run
fedforge show RUN_DIR                              the per-round table of a run

``add_parsers(sub)`` adds them to the ``fedforge`` argument parser; each sets ``func``
to its handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedforge.cli.tables import summary_table
from fedforge.server.history import History, Record


def add_parsers(sub: Any) -> None:
    """Add simulate and show to ``sub`` (an argparse subparsers action)."""
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
    sim.set_defaults(func=_simulate)

    show = sub.add_parser(
        "show",
        help="print the per-round table of a run directory",
        description="Print the per-round metrics of a run directory as a table.",
    )
    show.add_argument("run_dir", help="a run directory written by `fedforge simulate`")
    show.set_defaults(func=_show)


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
        run_dir = RunDir(existing_run(args.resume))
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
    if sim.preprocessing is not None:  # the federation's, from the sites' sums
        import json

        (run_dir.path / "preprocessing.json").write_text(json.dumps(sim.preprocessing, indent=1))
    print(f"run directory: {run_dir.path}", file=sys.stderr)
    try:
        history = sim.server.run(
            sim.clients,
            cfg.server.rounds,
            backend=sim.backend,
            run_dir=run_dir,
            checkpoint_every=cfg.run.checkpoint_every,
            keep_checkpoints=cfg.run.keep_checkpoints,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:  # SIGINT or SIGTERM: run() wrote metrics, plot, checkpoints
        print(
            f"fedforge: interrupted; metrics and checkpoints in {run_dir.path}; continue with "
            f"fedforge simulate --resume {run_dir.path}",
            file=sys.stderr,
        )
        return 130
    summary_table(history, f"{cfg.name}: {len(history)} rounds")
    _print_reputation(history)
    if sim.server.stopped:
        print(f"stopped early: {sim.server.stopped}", file=sys.stderr)
    print(f"metrics, plot and checkpoints in {run_dir.path}", file=sys.stderr)
    return 0


def existing_run(path: str) -> Path:
    """``path`` if it is a run directory (it has the config ``--resume`` reads)."""
    p = Path(path)
    if not (p / "config.yaml").is_file():
        raise FileNotFoundError(
            f"no run to resume at {p} (no config.yaml there): give a directory that "
            "`fedforge simulate` or `fedforge server` made, e.g. runs/<name>-<time>"
        )
    return p


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


def load_config(path: str | None, overrides: list[str], resume: str | None = None) -> Any:
    from fedforge import config as C

    if resume:
        import yaml

        from fedforge.server import RunDir

        if path:
            raise C.ConfigError("give either CONFIG or --resume RUN_DIR, not both")
        doc = yaml.safe_load(RunDir(existing_run(resume)).read_config())
        return C.validate(C.apply_overrides(doc if isinstance(doc, dict) else {}, overrides))
    return C.load(path, overrides)
