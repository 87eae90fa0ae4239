"""TLS and identities.

Under mutual TLS a participant's identity is the common name of the client certificate
the TLS handshake verified against the federation's CA; the server never takes an
identity from a message body. A certificate the CA did not sign fails the handshake; a
valid certificate whose name is not a participant of this federation, or is listed in
``revoked.json``, is refused at every call. Plain text (``Insecure``) trusts the id a
participant claims and exists only for tests on one machine; it must be asked for.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

INSECURE_WARNING = (
    "WARNING: plain-text gRPC (--insecure): no encryption, no authentication; any process "
    "that reaches this port can claim any participant id. Use only on a trusted machine."
)


@dataclass(frozen=True)
class ServerTLS:
    """Server certificate and key, the CA that signs participants, and the revocation list."""

    cert: Path
    key: Path
    ca: Path
    revoked: Path | None = None
    require_client_cert: bool = True

    @staticmethod
    def from_dir(folder: str | Path) -> ServerTLS:
        d = Path(folder)
        return ServerTLS(d / "server.pem", d / "server.key", d / "ca.pem", d / "revoked.json")

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key.read_bytes(), self.cert.read_bytes())],
            root_certificates=self.ca.read_bytes(),
            require_client_auth=self.require_client_cert,
        )


@dataclass(frozen=True)
class ClientTLS:
    """The CA that signed the server, and this participant's certificate and key."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    @staticmethod
    def from_dir(folder: str | Path, client_id: str) -> ClientTLS:
        d = Path(folder)
        return ClientTLS(
            d / "ca.pem",
            d / "participants" / f"{client_id}.pem",
            d / "participants" / f"{client_id}.key",
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=self.key.read_bytes() if self.key else None,
            certificate_chain=self.cert.read_bytes() if self.cert else None,
        )


class Revocations:
    """``revoked.json`` ({"revoked": [ids]}), re-read whenever the file changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._ids: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def __contains__(self, client_id: object) -> bool:
        if self.path is None:
            return False
        with self._lock:
            try:
                mtime = os.stat(self.path).st_mtime_ns
            except FileNotFoundError:
                self._ids, self._mtime = frozenset(), None
                return False
            if mtime != self._mtime:
                try:
                    doc = json.loads(self.path.read_text())
                    self._ids = frozenset(str(x) for x in doc.get("revoked", []))
                except (OSError, ValueError, AttributeError) as exc:
                    # Fail closed: an unreadable list revokes everyone until it is fixed.
                    log.error("cannot read %s (%s): refusing all participants", self.path, exc)
                    self._ids = frozenset({str(client_id)})
                    return True
                self._mtime = mtime
            return client_id in self._ids


def peer_identity(ctx: grpc.ServicerContext) -> str | None:
    """The verified certificate common name of the caller, or None without client TLS."""
    auth = ctx.auth_context()
    names = auth.get("x509_common_name") or []
    if not names:
        return None
    name = names[0]
    return name.decode() if isinstance(name, bytes) else str(name)
