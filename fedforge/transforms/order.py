"""Which orders of compressing transforms can be inverted, checked before a round runs.

A compressing pipeline reads like a codec: sparsify, then quantize the
values that are left, then a lossless stage over everything. The rules:

- the lossless stage (``Zstd``) is last: it turns all tensors into one byte
  string, so a stage after it would see nothing it could compress or decode;
- at most one sparsifier (``TopK``, ``RandomK``) and at most one quantizer
  (``Quantize``, ``Cast``): a second quantizer would quantize the first one's
  scales, a second sparsifier would drop entries of the first one's values;
- a sparsifier comes before the quantizer: after quantization there are only
  codes and scales left to sparsify;
- ``ErrorFeedback(*inner)`` counts as its inner stages, and cannot wrap
  another ``ErrorFeedback``.

Any other transform (clipping, noise, masking) is not constrained here, but
none may follow the lossless stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

from fedforge.transforms.base import Transform
from fedforge.transforms.cast import Cast


class Stage(IntEnum):
    """Where a compressing transform belongs; stages must not decrease along a pipeline."""

    SPARSIFY = 1
    QUANTIZE = 2
    LOSSLESS = 3


def _stages(t: Transform, nested: bool = False) -> list[tuple[str, Stage | None]]:
    inner: Sequence[Transform] | None = getattr(t, "inner", None)
    if inner is not None:
        if nested:
            raise ValueError(f"{t.name!r}: error feedback cannot wrap another error feedback")
        return [s for i in inner for s in _stages(i, nested=True)]
    if isinstance(t, Cast):
        return [(t.name, Stage.QUANTIZE)]
    stage = getattr(t, "stage", None)
    return [(t.name, stage if isinstance(stage, Stage) else None)]


def validate_order(transforms: Sequence[Transform]) -> None:
    """Raise ``ValueError`` saying why if ``transforms`` (in encode order) cannot be inverted."""
    seen: dict[Stage, str] = {}
    after_lossless: str | None = None
    for name, stage in (s for t in transforms for s in _stages(t)):
        if after_lossless is not None:
            raise ValueError(
                f"{name!r} follows {after_lossless!r}: the lossless stage packs every tensor "
                "into one compressed byte string and must be the last transform"
            )
        if stage is None:
            continue
        if stage in seen:
            what = "quantizer" if stage is Stage.QUANTIZE else stage.name.lower() + " stage"
            raise ValueError(
                f"{name!r} follows {seen[stage]!r}: only one {what} per pipeline "
                "(a second one would compress the first one's output, not the update)"
            )
        later = [seen[s] for s in seen if s > stage]
        if later:
            raise ValueError(
                f"{name!r} follows {later[0]!r}: sparsify before quantizing, and compress "
                "losslessly last (order: sparsify -> quantize -> zstd)"
            )
        seen[stage] = name
        if stage is Stage.LOSSLESS:
            after_lossless = name
