"""Federated algorithms as round hooks (``Algorithm``): plain averaging (FedAvg, FedProx),
SCAFFOLD, FedNova."""

from fedforge.algorithms.base import Algorithm, AlgoState, CorrectedClient, Plain, split
from fedforge.algorithms.fednova import FedNova
from fedforge.algorithms.scaffold import Scaffold

__all__ = ["AlgoState", "Algorithm", "CorrectedClient", "Plain", "FedNova", "Scaffold", "split"]
