"""``fedforge dashboard RUN_DIR``: the argument parser and handler (web stack imported late)."""

from __future__ import annotations

import argparse
from typing import Any

from fedforge.dashboard.settings import DEFAULT_PORT

_DESCRIPTION = """\
Serve a live, read-only web page of the run in RUN_DIR: round progress and time per
round, loss and metric curves, participants (sampled, answered, dropped, rejected and
why; with a `fedforge server` run also connected, bytes each way, last seen), privacy
budget, secure aggregation, compression and the configuration. It updates while the run
trains and works on finished runs; RUN_DIR may be one a run has not created yet.

Bound to a loopback address (the default) it needs no token. Bound to any other address
it prints a link with a token at start and refuses requests without it; give --certs to
serve over TLS."""

_EXAMPLES = """examples:
  fedforge dashboard runs/breast-cancer-20261125-101500           # http://127.0.0.1:8050/
  fedforge dashboard runs/my-run --port 9000
  fedforge dashboard runs/my-run --host 0.0.0.0 --certs certs/    # token + TLS
  fedforge server configs/breast_cancer.toml --insecure --dashboard 8050
"""


def add_parser(sub: Any) -> None:
    """Add ``dashboard`` to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "dashboard",
        help="serve a live web page of a run directory",
        description=_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (simulate or server)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    p.add_argument("--token", help="the token to require (default: a new one, unless on loopback)")
    p.add_argument(
        "--certs", metavar="DIR", help="serve over TLS with DIR/server.pem and DIR/server.key"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fedforge.dashboard.service import Certs, serve

    serve(
        args.run_dir,
        args.host,
        args.port,
        args.token,
        Certs.from_dir(args.certs) if args.certs else None,
    )
    return 0
