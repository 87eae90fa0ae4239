"""Backends: where participants run.

``Sequential`` (one at a time, bit-reproducible), ``Processes`` (a forked pool),
``Vectorized`` (groups of participants as one ``torch.func`` program), ``RayBackend``
(Ray actors, local or on a cluster; Ray is imported only when it starts) and, in
``fedforge.backends.grpc_backend``, real participant processes over gRPC.
"""

from fedforge.backends.base import Backend, ClientFailure, FitBatch, FitOutcome, Job, each_result
from fedforge.backends.processes import Processes
from fedforge.backends.ray_backend import RayBackend
from fedforge.backends.sequential import Sequential
from fedforge.backends.vectorized import Vectorized

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
