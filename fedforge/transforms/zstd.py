"""Lossless last stage: every tensor packed into one zstd-compressed byte string.

Zstandard (Collett & Kucherawy, RFC 8878) squeezes what the lossy stages
leave: varint index streams, headers, values that cluster. Quantized codes
of noisy updates are close to random and gain little; say so in figures.

``encode`` serializes all tensors with safetensors (no pickle on the wire)
and compresses them into a single ``uint8`` tensor; ``decode`` refuses a
frame without a declared size, one larger than ``max_bytes`` (a
decompression bomb), a truncated or trailing-garbage frame, and an archive
safetensors cannot parse, each with a ``PayloadError`` that says which.
Must be the last transform (``validate_order``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import torch
import zstandard
from pydantic import Field
from safetensors import SafetensorError
from safetensors.torch import load, save

from fedforge.components import NOT_DECLARED, register
from fedforge.transforms.base import ClientState, Context, PayloadError, Tensors
from fedforge.transforms.order import Stage

KEY = "#zstd"


@register("transform", "zstd")
@dataclass(frozen=True)
class Zstd:
    """Compress the whole encoded update with zstd at ``level`` (1..22)."""

    level: Annotated[int, Field(ge=1, le=22)] = 3
    # largest decompressed archive accepted (4 GiB): the server's own limit
    max_bytes: int = field(default=1 << 32, metadata=NOT_DECLARED)
    linear: bool = field(default=False, init=False)
    stage: ClassVar[Stage] = Stage.LOSSLESS

    def __post_init__(self) -> None:
        if isinstance(self.level, bool) or not isinstance(self.level, int):
            raise ValueError(f"level must be an integer in 1..22, got {self.level!r}")
        if not 1 <= self.level <= 22:
            raise ValueError(f"level must be in 1..22, got {self.level}")
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be positive, got {self.max_bytes}")

    @property
    def name(self) -> str:
        return "zstd"

    def encode(self, x: Tensors, ctx: Context, state: ClientState) -> Tensors:
        raw = save({k: v.contiguous() for k, v in x.items()})
        packed = zstandard.ZstdCompressor(level=self.level).compress(raw)
        return {KEY: torch.frombuffer(bytearray(packed), dtype=torch.uint8)}

    def decode(self, x: Tensors, ctx: Context) -> Tensors:
        if set(x) != {KEY}:
            raise PayloadError(f"expected only the tensor {KEY!r}, got {sorted(x)[:5]}")
        data = x[KEY]
        if data.dtype != torch.uint8 or data.dim() != 1:
            raise PayloadError(f"{KEY!r} must be 1-D uint8, got {data.dtype} {list(data.shape)}")
        blob = data.numpy().tobytes()
        try:
            size = zstandard.frame_content_size(blob)
        except zstandard.ZstdError as exc:
            raise PayloadError(f"not a zstd frame: {exc}") from exc
        if size < 0:
            raise PayloadError("zstd frame does not declare its decompressed size")
        if size > self.max_bytes:
            raise PayloadError(f"zstd frame would decompress to {size} bytes > {self.max_bytes}")
        d = zstandard.ZstdDecompressor().decompressobj()
        try:
            raw = d.decompress(blob)
        except zstandard.ZstdError as exc:
            raise PayloadError(f"corrupt zstd frame: {exc}") from exc
        if not d.eof or len(raw) != size:
            raise PayloadError(f"zstd frame is truncated ({len(raw)} of {size} bytes)")
        if d.unused_data:
            raise PayloadError(f"{len(d.unused_data)} bytes of garbage after the zstd frame")
        try:
            return load(raw)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise PayloadError(f"decompressed archive is not valid: {exc}") from exc
