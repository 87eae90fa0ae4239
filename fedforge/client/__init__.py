"""Participants: the ``Client`` protocol and ``TorchClient`` for any ``nn.Module``."""

from fedforge.client.local import LocalPlan, OptimizerFactory, Trained, adam, adamw, sgd, train
from fedforge.client.metrics import MetricSet
from fedforge.client.tasks import Task, classification, regression
from fedforge.client.torch_client import TorchClient, central_evaluator, evaluate_model
from fedforge.client.types import Client, EvalResult, FitResult, RoundInfo, Scalar

__all__ = [
    "Client",
    "EvalResult",
    "FitResult",
    "LocalPlan",
    "MetricSet",
    "OptimizerFactory",
    "RoundInfo",
    "Scalar",
    "Task",
    "TorchClient",
    "Trained",
    "adam",
    "adamw",
    "central_evaluator",
    "classification",
    "evaluate_model",
    "regression",
    "sgd",
    "train",
]
