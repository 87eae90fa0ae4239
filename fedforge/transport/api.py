"""Deployment from Python, one call each side: ``serve`` a federation, ``join`` it.

```python
import fedforge as ff

# the server's machine: any Server (model, sampler, aggregator, plugins), over mutual TLS
history = ff.serve(server, rounds=20, participants=["bank_a", "bank_b"], certs="certs",
                   host="0.0.0.0", port=50051)

# each site: any Client (a TorchClient on the site's own data, or your own class)
ff.join(client, "server.example.org:50051", client_id="bank_a", certs="certs")
```

``certs`` is a folder made by ``fedforge certs DIR --ids bank_a,bank_b``: the server
reads ``ca.pem`` and ``server.pem``/``.key``, a participant ``ca.pem`` and
``participants/<id>.pem``/``.key``; the certificate proves the participant's id.
``insecure=True`` instead is plain text for a single trusted machine (it warns).
The participant's whole stack (uplink pipeline, secure aggregation, the algorithm's
participant hook) runs in its own process, as with ``fedforge client``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from pathlib import Path

from fedforge.backends.grpc_backend import GrpcBackend
from fedforge.client.types import Client
from fedforge.params import ClientId
from fedforge.server import History, RunDir, Server
from fedforge.transport.participant import Backoff, ParticipantStats, connect
from fedforge.transport.quorum import Quorum
from fedforge.transport.registry import Registry
from fedforge.transport.security import ClientTLS, ServerTLS
from fedforge.transport.service import TransportServer

__all__ = ["join", "serve"]

log = logging.getLogger(__name__)


def serve(
    server: Server,
    rounds: int,
    *,
    participants: Collection[ClientId],
    certs: str | Path | None = None,
    insecure: bool = False,
    host: str = "127.0.0.1",
    port: int = 0,
    min_participants: int | None = None,
    join_timeout: float = 600.0,
    round_timeout: float = 600.0,
    run_dir: RunDir | str | Path | None = None,
    on_listening: Callable[[str], None] | None = None,
    progress: bool = False,
) -> History:
    """Listen on ``host:port``, wait for ``min_participants`` (default: all) of
    ``participants``, train ``rounds`` rounds with them and return the history; they are
    told when training ends. ``on_listening(address)`` is called once the port is open
    (``port=0`` picks a free one). Raises ``TimeoutError`` if too few join in time."""
    if (certs is None) == (not insecure):
        raise ValueError("give certs=DIR (from `fedforge certs`) or insecure=True, not both")
    registry = Registry(participants)
    transport = TransportServer(
        registry,
        host=host,
        port=port,
        tls=None if certs is None else ServerTLS.from_dir(certs),
        insecure=insecure,
    ).start()
    try:
        if on_listening is not None:
            on_listening(transport.address)
        log.info("federation server listening on %s", transport.address)
        quorum = Quorum(registry, min_participants or len(registry.allowed or ()), join_timeout)
        why = quorum.gather(server)
        if why is not None:
            raise TimeoutError(f"cannot start: {why}")
        server.plugins.append(quorum)
        return server.run(
            registry,
            rounds,
            backend=GrpcBackend(registry, round_timeout),
            run_dir=run_dir,
            progress=progress,
        )
    finally:
        transport.stop()


def join(
    client: Client,
    address: str,
    *,
    client_id: ClientId,
    certs: str | Path | None = None,
    insecure: bool = False,
    state_file: Path | None = None,
    max_attempts: int | None = 10,
) -> ParticipantStats:
    """Serve ``client`` as participant ``client_id`` to the server at ``address``
    (``HOST:PORT``) until training ends; returns what it did (tasks, bytes, rounds).
    ``state_file`` keeps the participant stack's own state across restarts."""
    if (certs is None) == (not insecure):
        raise ValueError("give certs=DIR (from `fedforge certs`) or insecure=True, not both")
    return connect(
        client,
        address,
        client_id=client_id,
        tls=None if certs is None else ClientTLS.from_dir(certs, client_id),
        insecure=insecure,
        backoff=Backoff(attempts=max_attempts),
        state_file=state_file,
    )
