"""The central server: round loop, sampling, history, checkpoints and the run directory."""

from fedforge.plugins import Plugin
from fedforge.server.checkpoint import Checkpoint
from fedforge.server.history import History, Record
from fedforge.server.rundir import RunDir
from fedforge.server.sampler import Sampler
from fedforge.server.server import CentralEval, EvalPlan, Server

__all__ = [
    "CentralEval",
    "Checkpoint",
    "EvalPlan",
    "History",
    "Plugin",
    "Record",
    "RunDir",
    "Sampler",
    "Server",
]
