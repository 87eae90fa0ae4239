"""Server optimizers (Reddi et al. 2021): FedAvg, FedAvgM, FedAdam, FedYogi, FedAdagrad."""

from fedforge.optim.server_opt import (
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedYogi,
    ServerOptimizer,
    ServerOptimizerSpec,
)
from fedforge.optim.yogi import Yogi

__all__ = [
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedYogi",
    "ServerOptimizer",
    "ServerOptimizerSpec",
    "Yogi",
]
