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
    "regression",
    "sgd",
]
