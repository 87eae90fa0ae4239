"""fedforge: federated learning for large models, simulation and deployment with the same code."""

from fedforge.aggregate import Mean, Sum, WeightedMean
from fedforge.backends import Processes, Sequential
from fedforge.client import (
    Client,
    EvalResult,
    FitResult,
    RoundInfo,
    TorchClient,
    adam,
    central_evaluator,
    classification,
    evaluate_model,
    regression,
    sgd,
)
from fedforge.optim import FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi
from fedforge.params import ClientId, Params, from_module
from fedforge.server import EvalPlan, History, RunDir, Sampler, Server

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``serve`` and ``join`` (``fedforge.transport.api``), imported on first use: the
    wire's dependencies (gRPC) load only for deployment."""
    if name in ("serve", "join"):
        from fedforge.transport import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedforge' has no attribute {name!r}")


__all__ = [
    "Client",
    "ClientId",
    "EvalPlan",
    "EvalResult",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "FitResult",
    "History",
    "Mean",
    "Params",
    "Processes",
    "RoundInfo",
    "RunDir",
    "Sampler",
    "Sequential",
    "Server",
    "Sum",
    "TorchClient",
    "WeightedMean",
    "adam",
    "central_evaluator",
    "classification",
    "evaluate_model",
    "from_module",
    "join",
    "regression",
    "serve",
    "sgd",
]
