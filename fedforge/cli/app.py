"""The ``fedforge`` command: its argument parser, ``main`` and the console script.

The subcommands live beside it: ``simulate`` and ``show`` in ``simulate.py``;
``server``, ``client``, ``certs`` and ``status`` in ``deploy.py``; ``dashboard`` in
``fedforge.dashboard.command``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from fedforge.cli import deploy, simulate
from fedforge.dashboard import command as dashboard

_EXAMPLE = """examples:
  fedforge simulate                                  # built-in default: Fashion-MNIST CNN
  fedforge simulate configs/breast_cancer.toml --set server.rounds=5
  fedforge simulate --resume runs/fashion-mnist-cnn-20261125-101500
  fedforge show runs/fashion-mnist-cnn-20261125-101500
  fedforge dashboard runs/fashion-mnist-cnn-20261125-101500
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
    simulate.add_parsers(sub)  # simulate, show
    deploy.add_parsers(sub)  # server, client, certs, status
    dashboard.add_parser(sub)
    return p


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
    try:
        return int(args.func(args))
    except (ConfigError, FileNotFoundError, ValueError) as exc:
        print(f"fedforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedforge: interrupted; resume with --resume RUN_DIR", file=sys.stderr)
        return 130


def entry() -> None:
    """The ``fedforge`` console script: ``main``, then exit (see ``exit_after_client``)."""
    code = main()
    deploy.exit_after_client(_LAST_COMMAND, code)
    sys.exit(code)
