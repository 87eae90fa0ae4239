"""Participants: the ``Client`` protocol and ``TorchClient`` for any ``nn.Module``."""

from fedforge.client.tasks import Task, classification, regression
from fedforge.client.torch_client import (
    OptimizerFactory,
    TorchClient,
    adam,
    central_evaluator,
    evaluate_model,
    sgd,
)
from fedforge.client.types import Client, EvalResult, FitResult, RoundInfo, Scalar

__all__ = [
    "Client",
    "EvalResult",
    "FitResult",
    "OptimizerFactory",
    "RoundInfo",
    "Scalar",
    "Task",
    "TorchClient",
    "adam",
    "central_evaluator",
    "classification",
    "evaluate_model",
    "regression",
    "sgd",
]
