"""Casting updates to half precision: float16 or bfloat16 on the wire, float32 after.

The simplest compression (2x); decoding restores the template's dtype. Linear
up to rounding, so it composes with secure aggregation's fixed-point sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from fedforge.components import register
from fedforge.transforms.base import ClientState, Context, PayloadError, Tensors

_WIRE = {"float16": torch.float16, "bfloat16": torch.bfloat16}


@register("transform", "cast")
@dataclass(frozen=True)
class Cast:
    dtype: Literal["float16", "bfloat16"] = "float16"
    linear: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if self.dtype not in _WIRE:
            raise ValueError(f"cast dtype must be one of {sorted(_WIRE)}, got {self.dtype!r}")

    @property
    def name(self) -> str:
        return f"cast_{self.dtype}"

    def encode(self, x: Tensors, ctx: Context, state: ClientState) -> Tensors:
        return {k: v.to(_WIRE[self.dtype]) if v.is_floating_point() else v for k, v in x.items()}

    def decode(self, x: Tensors, ctx: Context) -> Tensors:
        for k, v in x.items():
            if v.is_floating_point() and v.dtype != _WIRE[self.dtype]:
                raise PayloadError(f"{k!r} arrived as {v.dtype}, expected {self.dtype}")
        return {k: v.float() if v.is_floating_point() else v for k, v in x.items()}
