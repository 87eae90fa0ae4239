"""L2 clipping of a whole update: the sensitivity bound every Gaussian mechanism here relies on.

The update is treated as one flat vector (all tensors together, as
``params.l2_norm`` does) and scaled by ``min(1, bound / ||update||)``; e.g.
[3, 4] (norm 5) clipped to bound 1 becomes [0.6, 0.8].
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

from fedforge.params import Params, l2_norm, scale


def clip_scale(norm: float, bound: float) -> float:
    """The factor ``min(1, bound / norm)`` (1 for a zero update)."""
    return 1.0 if norm <= bound else bound / norm


def clip_update(update: Mapping[str, Tensor], bound: float) -> tuple[Params, float]:
    """``(update scaled to L2 norm <= bound, norm before clipping)``."""
    norm = l2_norm(update)
    return scale(update, clip_scale(norm, bound)), norm
