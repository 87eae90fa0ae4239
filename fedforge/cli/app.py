"""The ``fedforge`` command: its argument parser, ``main`` and the console script.

The subcommands live beside it: ``simulate`` and ``show`` in ``simulate.py``;
``server``, ``certs`` and ``status`` in ``deploy.py`` (with the parser of ``client``, whose
handler is in ``participant.py``); ``new`` in ``new.py``;
``dashboard`` in ``fedforge.dashboard.command``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence

from fedforge.cli import deploy, export, new, participant, simulate
from fedforge.dashboard import command as dashboard

_EXAMPLE = """examples:
  fedforge new demo                                  # a starter project: two sites, their CSVs
  fedforge simulate                                  # built-in default: Fashion-MNIST CNN
  fedforge simulate configs/breast_cancer.toml --set server.rounds=5
  fedforge simulate --resume runs/fashion-mnist-cnn-20261125-101500
  fedforge show runs/fashion-mnist-cnn-20261125-101500
  fedforge dashboard runs/fashion-mnist-cnn-20261125-101500
  fedforge export runs/hospitals-20261208-101500 --merge merged/   # a language-model run
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
    new.add_parser(sub)  # first in the list: where a new user starts
    simulate.add_parsers(sub)  # simulate, show
    deploy.add_parsers(sub)  # server, client, certs, status
    dashboard.add_parser(sub)
    export.add_parser(sub)
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
    signal.signal(signal.SIGTERM, _interrupt)  # a SIGTERM ends a run as Ctrl-C does
    try:
        return int(args.func(args))
    except (ConfigError, OSError, ValueError) as exc:  # bad path, busy port, bad certificate
        if isinstance(exc, BrokenPipeError):
            return _broken_pipe()
        print(f"fedforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the commands that write a run say where it is themselves
        print("fedforge: interrupted", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _broken_pipe() -> int:
    """The reader of stdout went away (``fedforge status RUN | head``): stop quietly. Point
    stdout at /dev/null so that flushing it at exit does not fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, as a shell reports it


def entry() -> None:
    """The ``fedforge`` console script: ``main``, then exit (see ``exit_after_client``)."""
    code = main()
    participant.exit_after_client(_LAST_COMMAND, code)
    sys.exit(code)
