"""Deployment over gRPC: the wire format, the service, TLS and identities, participants.

Server side: a ``Registry`` of connected participants (what ``Server.run`` samples
from), a ``TransportServer`` that serves it, and ``fedforge.backends.GrpcBackend``
that sends tasks and gathers results. Participant side: ``connect(client, address, ...)``
serves any ``Client`` to a server. Secure aggregation: ``GrpcSecAgg(registry)`` is the
``SecureAggregator`` channel that runs each participant's SecAgg+ side in its own process.
Wire: protobuf frames (``proto/fedforge.proto``),
tensors as raw buffers with dtype and shape, in chunks with a SHA-256 per message.
"""

from fedforge.transport.certs import make_all as make_certs
from fedforge.transport.certs import revoke
from fedforge.transport.codec import WireError
from fedforge.transport.guard import StreamLimits
from fedforge.transport.participant import Backoff, ParticipantStats, Refused, connect
from fedforge.transport.quorum import Quorum
from fedforge.transport.registry import Registry, RemoteClient
from fedforge.transport.secagg import GrpcSecAgg
from fedforge.transport.security import ClientTLS, ServerTLS
from fedforge.transport.service import Limits, PortInUse, TransportServer
from fedforge.transport.status import StatusFile

__all__ = [
    "Backoff",
    "ClientTLS",
    "GrpcSecAgg",
    "Limits",
    "ParticipantStats",
    "PortInUse",
    "Quorum",
    "Refused",
    "Registry",
    "RemoteClient",
    "ServerTLS",
    "StatusFile",
    "StreamLimits",
    "TransportServer",
    "WireError",
    "connect",
    "make_certs",
    "revoke",
]
