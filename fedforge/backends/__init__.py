"""Backends: where participants run (sequential, processes; more to come)."""

from fedforge.backends.base import Backend, ClientFailure, Job
from fedforge.backends.processes import Processes
from fedforge.backends.sequential import Sequential

__all__ = ["Backend", "ClientFailure", "Job", "Processes", "Sequential"]
