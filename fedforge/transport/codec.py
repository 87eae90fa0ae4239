"""Tensors as raw buffers with a dtype and a shape: the only tensor encoding on the wire.

A message lists ``TensorSpec(name, dtype, shape)`` entries; its payload is the tensors'
bytes in spec order (C order, the host's little-endian layout), with no padding. The
receiver checks every spec against an allow-list of dtypes and a size limit *before*
allocating anything, so a hostile header cannot make it reserve memory it will not get.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from fedforge.transport.proto import fedforge_pb2 as pb

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little endian
    raise ImportError("fedforge.transport assumes a little-endian host")

DTYPES: dict[str, torch.dtype] = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
    "int32": torch.int32,
    "int16": torch.int16,
    "int8": torch.int8,
    "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAMES = {v: k for k, v in DTYPES.items()}
MAX_DIMS = 16


class WireError(ValueError):
    """A message refused; the text is the reason that is logged and sent back."""


@dataclass(frozen=True)
class Layout:
    """What a header promises: tensor names, dtypes, shapes and the payload size in bytes."""

    names: tuple[str, ...]
    dtypes: tuple[torch.dtype, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def sizes(self) -> list[int]:
        return [
            math.prod(s) * torch.empty((), dtype=d).element_size()
            for d, s in zip(self.dtypes, self.shapes, strict=True)
        ]

    @property
    def total(self) -> int:
        return sum(self.sizes)

    @staticmethod
    def of(tensors: Mapping[str, Tensor]) -> Layout:
        for k, t in tensors.items():
            if t.dtype not in _NAMES:
                raise WireError(f"tensor {k!r}: dtype {t.dtype} cannot cross the wire")
        return Layout(
            tuple(tensors),
            tuple(t.dtype for t in tensors.values()),
            tuple(tuple(t.shape) for t in tensors.values()),
        )

    def specs(self) -> list[pb.TensorSpec]:
        return [
            pb.TensorSpec(name=n, dtype=_NAMES[d], shape=list(s))
            for n, d, s in zip(self.names, self.dtypes, self.shapes, strict=True)
        ]


def parse_specs(specs: Sequence[pb.TensorSpec], declared: int, limit: int) -> Layout:
    """Validate a header's tensor list and declared payload size; raise ``WireError``."""
    names: list[str] = []
    dtypes: list[torch.dtype] = []
    shapes: list[tuple[int, ...]] = []
    seen: set[str] = set()
    total = 0
    for i, s in enumerate(specs):
        if not s.name or s.name in seen:
            raise WireError(f"tensor #{i}: name {s.name!r} is empty or repeated")
        if s.dtype not in DTYPES:
            raise WireError(f"tensor {s.name!r}: dtype {s.dtype!r} is not one of {sorted(DTYPES)}")
        if len(s.shape) > MAX_DIMS or any(d < 0 for d in s.shape):
            raise WireError(f"tensor {s.name!r}: invalid shape {list(s.shape)}")
        dtype = DTYPES[s.dtype]
        size = math.prod(s.shape) * torch.empty((), dtype=dtype).element_size()
        total += size
        if total > limit:
            raise WireError(f"message of at least {total} bytes exceeds the limit of {limit} bytes")
        seen.add(s.name)
        names.append(s.name)
        dtypes.append(dtype)
        shapes.append(tuple(int(d) for d in s.shape))
    if declared != total:
        raise WireError(f"header declares {declared} payload bytes but its tensors need {total}")
    return Layout(tuple(names), tuple(dtypes), tuple(shapes))


def describe_mismatch(expected: Layout, got: Layout) -> str | None:
    """Why ``got`` is not the ``expected`` model layout (None: it is)."""
    if set(expected.names) != set(got.names):
        missing = sorted(set(expected.names) - set(got.names))[:3]
        extra = sorted(set(got.names) - set(expected.names))[:3]
        return f"tensor names differ (missing {missing}, unexpected {extra})"
    want = dict(
        zip(expected.names, zip(expected.dtypes, expected.shapes, strict=True), strict=True)
    )
    for n, d, s in zip(got.names, got.dtypes, got.shapes, strict=True):
        if want[n] != (d, s):
            return f"tensor {n!r}: got {d} {list(s)}, expected {want[n][0]} {list(want[n][1])}"
    return None


def raw_bytes(t: Tensor) -> memoryview:
    """The bytes of ``t`` (copied only if it is not contiguous on the CPU)."""
    flat = t.detach().cpu().contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data.cast("B")


def allocate(layout: Layout) -> dict[str, Tensor]:
    return {
        n: torch.empty(s, dtype=d)
        for n, d, s in zip(layout.names, layout.dtypes, layout.shapes, strict=True)
    }
