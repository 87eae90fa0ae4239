"""A live, read-only web dashboard of a run: rounds, metrics, participants, privacy, secure
aggregation, compression and the configuration, updated by server-sent events.

``serve(run_dir, host, port, token)`` serves a run directory in the foreground (``fedforge
dashboard``); ``Dashboard(run_dir, ..., status=...)`` serves it from a background thread of
a server process with its live status (``fedforge server --dashboard``). Needs the
``dashboard`` extra (Starlette, uvicorn).
"""

from fedforge.dashboard.serve import DEFAULT_PORT, Certs, Dashboard, resolve_token, serve

__all__ = ["DEFAULT_PORT", "Certs", "Dashboard", "resolve_token", "serve"]
