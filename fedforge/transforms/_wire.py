"""How the compressing transforms lay a tensor out on the wire, and read it back safely.

A compressed tensor ``k`` travels as a few tensors named ``k#<tag>`` (``#`` is
not used in PyTorch parameter names, so these cannot collide with a model's).
Its dtype and shape travel in a small int64 ``meta`` tensor, because a
transform's ``decode`` sees the payload only, not the model. Reading back
checks dtype, rank and size of every tensor and raises ``PayloadError`` naming
it, before anything large is allocated from numbers a sender chose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from fedforge.transforms.base import PayloadError, Tensors

SEP = "#"
MAX_DIMS = 16
# Wire codes of the dtypes a compressed tensor may have had (its meta's first entry).
_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


@dataclass(frozen=True)
class Meta:
    """Dtype and shape of the tensor a group of wire tensors decodes to."""

    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def meta(t: Tensor) -> Tensor:
    """``int64 [dtype code, *shape]`` of ``t``."""
    if t.dtype not in _DTYPES:
        raise ValueError(f"cannot compress a {t.dtype} tensor; floating dtypes: {_DTYPES}")
    return torch.tensor([_DTYPES.index(t.dtype), *t.shape], dtype=torch.int64)


def tagged(key: str, tag: str) -> str:
    return f"{key}{SEP}{tag}"


def bases(x: Tensors, tag: str) -> list[str]:
    """Names of the tensors that have a ``#tag`` part in ``x``."""
    suffix = SEP + tag
    return [k[: -len(suffix)] for k in x if k.endswith(suffix)]


def put(out: Tensors, key: str, value: Tensor) -> None:
    """``out[key] = value``, refusing to overwrite (an input named like a wire tensor)."""
    if key in out:
        raise ValueError(f"tensor name {key!r} is used twice; names with '{SEP}' are reserved")
    out[key] = value


def take(x: Tensors, key: str, dtype: torch.dtype | None = None) -> Tensor:
    """Remove and return the 1-D tensor ``x[key]``; ``dtype=None`` accepts any floating dtype."""
    if key not in x:
        raise PayloadError(f"tensor {key!r} is missing")
    v = x.pop(key)
    ok = v.is_floating_point() if dtype is None else v.dtype == dtype
    if not ok or v.dim() != 1:
        want = "floating" if dtype is None else str(dtype)
        raise PayloadError(
            f"tensor {key!r} is {v.dtype} of shape {list(v.shape)}, expected a 1-D {want} tensor"
        )
    return v


def read_meta(x: Tensors, key: str) -> Meta:
    v = take(x, key, torch.int64)
    if not 1 <= v.numel() <= 1 + MAX_DIMS:
        raise PayloadError(f"tensor {key!r} has {v.numel()} entries, expected 1..{1 + MAX_DIMS}")
    code, *dims = (int(d) for d in v.tolist())
    if not 0 <= code < len(_DTYPES):
        raise PayloadError(
            f"tensor {key!r} names dtype code {code}, expected 0..{len(_DTYPES) - 1}"
        )
    if any(d < 0 for d in dims):
        raise PayloadError(f"tensor {key!r} holds a negative dimension: {dims}")
    return Meta(_DTYPES[code], tuple(dims))


def expect_count(key: str, got: int, want: int) -> None:
    if got != want:
        raise PayloadError(f"tensor {key!r} has {got} entries, expected {want}")
