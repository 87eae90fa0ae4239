"""Small reference models for the classic federated benchmarks.

Each builder takes explicit sizes and returns a plain ``nn.Module``; nothing
here is federated, so any of them also trains centrally for comparison.
"""

import fedforge.models.factory  # noqa: F401  (declares the import and conv1d models)
from fedforge.models.reference import (
    char_lstm,
    cnn,
    linear_regression,
    logistic_regression,
    mlp,
)

__all__ = ["char_lstm", "cnn", "linear_regression", "logistic_regression", "mlp"]
