"""Run the dashboard: in the foreground (``serve``, what ``fedforge dashboard`` does) or in a
background thread of another process (``Dashboard``, what ``fedforge server --dashboard``
does, with the server's live status).

The socket is bound before the thread starts, so a taken port fails in the caller and port 0
gives a free port that ``Dashboard.port`` reports.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from fedforge.dashboard.app import Hub, LiveStatus, create_app
from fedforge.dashboard.auth import Guard, is_loopback, new_token
from fedforge.dashboard.settings import DEFAULT_PORT

log = logging.getLogger(__name__)

PLAIN_WARNING = (
    "fedforge dashboard: warning: serving beyond loopback without TLS; the token travels in "
    "plain text (give --certs DIR to serve over TLS)"
)


@dataclass(frozen=True)
class Certs:
    """A certificate and its key for TLS (``fedforge certs`` writes server.pem/server.key)."""

    cert: Path
    key: Path

    @staticmethod
    def from_dir(folder: str | Path) -> Certs:
        d = Path(folder)
        return Certs(d / "server.pem", d / "server.key")


def resolve_token(host: str, token: str | None) -> str | None:
    """The token a dashboard on ``host`` requires: the one given, else a new one unless
    ``host`` is a loopback address."""
    if token:
        return token
    return None if is_loopback(host) else new_token()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ValueError(f"dashboard: cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Dashboard:
    """The dashboard of ``run_dir`` served from a background thread; ``status`` (optional)
    returns the server's live state, else ``federation.json`` is read when present."""

    def __init__(
        self,
        run_dir: str | Path,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        token: str | None = None,
        certs: Certs | None = None,
        status: LiveStatus | None = None,
        min_interval: float = 0.5,
        max_interval: float = 5.0,
    ) -> None:
        self.host = host
        self.token = resolve_token(host, token)
        self.certs = certs
        self.hub = Hub(run_dir, status, min_interval, max_interval)
        app = create_app(self.hub, Guard(self.token, secure_cookie=certs is not None))
        self._sock = _bind(host, port)
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
            ssl_certfile=str(certs.cert) if certs else None,
            ssl_keyfile=str(certs.key) if certs else None,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="fedforge-dashboard", daemon=True)

    @property
    def url(self) -> str:
        """The address to open (with the token, when one is required)."""
        scheme = "https" if self.certs else "http"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        query = f"/?token={self.token}" if self.token else "/"
        return f"{scheme}://{host}:{self.port}{query}"

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self, timeout: float = 30.0) -> Dashboard:
        self._thread.start()
        waited = 0.0
        while not self._server.started and self._thread.is_alive() and waited < timeout:
            time.sleep(0.05)
            waited += 0.05
        if not self._server.started:
            raise RuntimeError(f"the dashboard did not start within {timeout:g} s")
        return self

    def announce(self) -> None:
        print(f"dashboard: {self.url}", file=sys.stderr, flush=True)
        if self.token and self.certs is None:
            print(PLAIN_WARNING, file=sys.stderr, flush=True)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C in the foreground)."""
        while self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        self._server.should_exit = True
        self.hub.closing = True
        self._thread.join(10)
        self._sock.close()


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    token: str | None = None,
    certs: Certs | None = None,
) -> None:
    """Serve the dashboard of ``run_dir`` until interrupted (Ctrl-C)."""
    dash = Dashboard(run_dir, host, port, token, certs).start()
    dash.announce()
    try:
        dash.wait()
    except KeyboardInterrupt:
        pass
    finally:
        dash.stop()
