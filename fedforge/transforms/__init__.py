"""The update pipeline: transforms between a participant's ``fit`` and the aggregator."""

from fedforge.transforms.base import ClientState, Context, PayloadError, Tensors, Transform
from fedforge.transforms.cast import Cast
from fedforge.transforms.pipeline import Pipeline

__all__ = ["Cast", "ClientState", "Context", "PayloadError", "Pipeline", "Tensors", "Transform"]
