"""Backends: where participants run.

The seam they implement (``Backend``, ``FitBatch``) and the reference ``Sequential`` live
with the server (``fedforge.server.backend``, ``fedforge.server.sequential``), which needs
them and may not import from this floor; they are re-exported here.

``Sequential`` (one at a time, bit-reproducible), ``Processes`` (a forked pool),
``Vectorized`` (groups of participants as one ``torch.func`` program), ``RayBackend``
(Ray actors, local or on a cluster; Ray is imported only when it starts) and, in
``fedforge.backends.grpc_backend``, real participant processes over gRPC.
"""

from fedforge.backends.processes import Processes
from fedforge.backends.ray_backend import RayBackend
from fedforge.backends.vectorized import Vectorized
from fedforge.client.types import ClientFailure
from fedforge.server.backend import Backend, FitBatch, FitOutcome, Job, each_result
from fedforge.server.sequential import Sequential

__all__ = [
    "Backend",
    "ClientFailure",
    "FitBatch",
    "FitOutcome",
    "Job",
    "Processes",
    "RayBackend",
    "Sequential",
    "Vectorized",
    "each_result",
]
