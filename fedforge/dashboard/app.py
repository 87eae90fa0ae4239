"""The dashboard's web application (Starlette): one page, its static files, the state as
JSON and as server-sent events. Read-only: every route answers GET (and HEAD) only.

One ``Hub`` per application polls the run directory in a worker thread (never on the event
loop) at an interval that follows how long a poll takes, between ``min_interval`` and
``max_interval`` seconds, and wakes every open event stream when what the page shows changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from fedforge.dashboard.auth import Guard
from fedforge.dashboard.reader import RunFiles, RunReader
from fedforge.dashboard.view import Doc, build_view, slim_record
from fedforge.server.history import Record

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
LiveStatus = Callable[[], Mapping[str, Any]]  # what fedforge.transport.status writes
HEARTBEAT_S = 15.0
STALE_S = 15.0  # federation.json older than this: the server is not running


def _finite(v: Any) -> Any:
    """JSON for a browser: NaN and infinities (which JSON lacks) as the strings Python prints."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _dumps(doc: Any) -> str:
    return json.dumps(_finite(doc), separators=(",", ":"), allow_nan=False)


def _parse_config(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


@dataclass(frozen=True)
class Snapshot:
    version: int
    generation: int  # grows when the rounds restart (a resumed run rewrote metrics.jsonl)
    view: Doc
    rounds: list[Record]


class Hub:
    """The latest state of one run, and the wake-up for event streams."""

    def __init__(
        self,
        run_dir: str | Path,
        status: LiveStatus | None = None,
        min_interval: float = 0.5,
        max_interval: float = 5.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.reader = RunReader(run_dir)
        self.status = status
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.snapshot = Snapshot(0, 0, {}, [])
        self._key = ""
        self._changed: asyncio.Event | None = None
        self.closing = False

    def _live(self, files: RunFiles) -> Mapping[str, Any] | None:
        if self.status is not None:
            return self.status()
        doc = files.federation
        if doc is None:
            return None  # a simulation: no server process to ask
        # the server rewrites it every second; the reader may be on another machine than
        # the server (a shared disk), so its age tells, not whether its pid runs here
        alive = time.time() - float(doc.get("updated", 0)) < STALE_S
        if not alive:  # a server that is gone has no one connected
            return {**doc, "alive": False, "connected": []}
        return {**doc, "alive": True}

    def _read(self) -> tuple[RunFiles, Mapping[str, Any] | None]:
        files = self.reader.poll()
        return files, self._live(files)

    async def refresh(self) -> None:
        files, live = await asyncio.to_thread(self._read)
        cfg = _parse_config(files.config_text)
        view = build_view(files.records, cfg, live, files.config_text, str(self.run_dir))
        rounds = [slim_record(r) for r in files.records]
        key = _dumps([files.generation, {**view, "run": {**view["run"], "updated": 0}}, rounds])
        if key != self._key:
            self._key = key
            self.snapshot = Snapshot(self.snapshot.version + 1, files.generation, view, rounds)
            if self._changed is not None:
                self._changed.set()
                self._changed = asyncio.Event()

    async def run(self) -> None:
        """Poll until cancelled; a failed poll is logged and tried again."""
        self._changed = asyncio.Event()
        while not self.closing:
            t0 = time.monotonic()
            try:
                await self.refresh()
            except Exception:  # a half-copied file, a vanished disk: keep serving the last state
                log.exception("dashboard: reading %s failed", self.run_dir)
            took = time.monotonic() - t0
            await asyncio.sleep(min(self.max_interval, max(self.min_interval, 4 * took)))

    async def wait(self, version: int, timeout: float) -> None:
        if self.snapshot.version != version or self._changed is None:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


def _message(snap: Snapshot, start: int) -> str:
    return _dumps({"version": snap.version, "view": snap.view, "rounds_from": start,
                   "rounds": snap.rounds[start:]})  # fmt: skip


def create_app(hub: Hub, guard: Guard) -> ASGIApp:
    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def state(request: Request) -> Response:
        snap = hub.snapshot
        return Response(_message(snap, 0), media_type="application/json")

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            sent_version, sent_generation, sent_rounds = -1, -1, 0
            yield "retry: 2000\n\n"
            while not hub.closing:
                snap = hub.snapshot
                if snap.version != sent_version:
                    start = sent_rounds if snap.generation == sent_generation else 0
                    start = min(start, len(snap.rounds))
                    yield f"event: state\ndata: {_message(snap, start)}\n\n"
                    sent_version, sent_generation = snap.version, snap.generation
                    sent_rounds = len(snap.rounds)
                else:
                    yield ": keep-alive\n\n"
                await hub.wait(sent_version, HEARTBEAT_S)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def health(request: Request) -> Response:
        return JSONResponse({"version": hub.snapshot.version})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(hub.run())
        try:
            yield
        finally:
            hub.closing = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/state", state, methods=["GET"]),
        Route("/api/events", events, methods=["GET"]),
        Route("/api/health", health, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return guard.wrap(app)
