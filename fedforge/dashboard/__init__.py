"""A live, read-only web dashboard of a run: rounds, metrics, participants, privacy, secure
aggregation, compression and the configuration, updated by server-sent events.

``serve(run_dir, host, port, token)`` serves a run directory in the foreground (``fedforge
dashboard``); ``Dashboard(run_dir, ..., status=...)`` serves it from a background thread of
a server process with its live status (``fedforge server --dashboard``). Needs the
``dashboard`` extra (Starlette, uvicorn).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedforge.dashboard.service import DEFAULT_PORT, Certs, Dashboard, resolve_token, serve

__all__ = ["DEFAULT_PORT", "Certs", "Dashboard", "resolve_token", "serve"]


def __getattr__(name: str) -> Any:
    # imported on first use: the ``fedforge`` command line builds its ``dashboard``
    # subcommand from this package, and must work without the web stack installed
    if name in __all__:
        import importlib

        return getattr(importlib.import_module("fedforge.dashboard.service"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
