"""The update pipeline: transforms between a participant's ``fit`` and the aggregator."""

from fedforge.transforms.base import ClientState, Context, PayloadError, Tensors, Transform
from fedforge.transforms.bitpack import pack, packed_size, unpack
from fedforge.transforms.broadcast import Broadcast, Message
from fedforge.transforms.cast import Cast
from fedforge.transforms.error_feedback import ErrorFeedback
from fedforge.transforms.lowrank import LowRank
from fedforge.transforms.order import Stage, validate_order
from fedforge.transforms.pipeline import Pipeline
from fedforge.transforms.quantize import Quantize, dequantize, quantize
from fedforge.transforms.randomk import RandomK
from fedforge.transforms.topk import TopK
from fedforge.transforms.varint import decode_varint, encode_varint
from fedforge.transforms.zstd import Zstd

__all__ = [
    "Broadcast",
    "Cast",
    "ClientState",
    "Context",
    "ErrorFeedback",
    "LowRank",
    "Message",
    "PayloadError",
    "Pipeline",
    "Quantize",
    "RandomK",
    "Stage",
    "Tensors",
    "TopK",
    "Transform",
    "Zstd",
    "decode_varint",
    "dequantize",
    "encode_varint",
    "pack",
    "packed_size",
    "quantize",
    "unpack",
    "validate_order",
]
