"""Fixed-point encoding of weighted, clipped updates into ``Z_{2^k}``.

Masks are uniform words modulo ``2^k``, so inputs must be integers modulo
``2^k`` too. A participant with update ``x`` and aggregation weight ``a``
(its example count for a weighted mean, 1 otherwise) sends

    q = round(scale * clamp(a * clamp(x, ±clip) + noise, ±B))  mod 2^k,   B = max_weight * clip

as ``k``-bit unsigned words (numpy's unsigned arithmetic wraps, which *is*
the modular sum). The sum of ``n`` such words, read back as a two's
complement ``k``-bit integer, is ``scale * Σ a_u x_u`` up to rounding,
provided nothing wraps:

    n * (B * scale + 1/2) < 2^(k-1)        (the overflow bound)

``scale_for(n)`` picks the largest power of two that keeps it, and at most
``2^52 / B`` so that every ``B * scale`` is an exact float64 integer. Then
the dequantized sum is off by at most ``n / (2 * scale)`` per coordinate
(half a step per participant), which ``error_bound`` states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_RESOLUTION_BITS = 8  # refuse a scale that leaves fewer bits per clipped coordinate


@dataclass(frozen=True)
class FixedPoint:
    bits: int = 64
    clip: float = 100.0  # per-coordinate bound on an update, before weighting
    max_weight: float = 1e6  # the largest aggregation weight a participant may carry

    def __post_init__(self) -> None:
        if self.bits not in (32, 64):
            raise ValueError(f"bits must be 32 or 64, got {self.bits}")
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if not (self.max_weight >= 1 and math.isfinite(self.max_weight)):
            raise ValueError(f"max_weight must be >= 1 and finite, got {self.max_weight}")

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        return np.dtype(np.uint64 if self.bits == 64 else np.uint32)

    @property
    def bound(self) -> float:
        """``B``: the largest magnitude of one participant's weighted coordinate."""
        return self.max_weight * self.clip

    def scale_for(self, n: int) -> float:
        """The power-of-two scale for ``n`` participants; ``ValueError`` if too coarse."""
        limit = min((2.0 ** (self.bits - 1) / n - 1.0) / self.bound, 2.0**52 / self.bound)
        if limit <= 0:
            raise ValueError(f"{n} participants overflow {self.bits}-bit words at any scale")
        scale = 2.0 ** math.floor(math.log2(limit))
        if scale >= limit:
            scale /= 2
        if scale * self.clip < 2**MIN_RESOLUTION_BITS:
            raise ValueError(
                f"{self.bits}-bit words leave fewer than {MIN_RESOLUTION_BITS} bits per "
                f"coordinate for {n} participants (clip={self.clip}, max_weight="
                f"{self.max_weight}): use bits=64 or lower clip or max_weight"
            )
        return scale

    def error_bound(self, n: int, scale: float) -> float:
        """Largest error per coordinate of the dequantized sum of ``n`` inputs."""
        return n * 0.5 / scale

    def encode(
        self, x: np.ndarray, weight: float, scale: float, noise: np.ndarray | None = None
    ) -> np.ndarray:
        """``x`` (float64, shape (d,)) weighted, clipped, scaled and rounded into ``Z_{2^k}``."""
        if not 0 <= weight <= self.max_weight:
            raise ValueError(f"weight {weight} outside [0, max_weight={self.max_weight}]")
        c = np.clip(x, -self.clip, self.clip) * weight
        if noise is not None:
            c = np.clip(c + noise, -self.bound, self.bound)
        q = np.rint(c * scale).astype(np.int64)
        return q.astype(self.dtype)  # two's complement reduction modulo 2^k

    def decode(self, total: np.ndarray) -> np.ndarray:
        """A sum of encodings (``Z_{2^k}`` words) as signed integers in float64, still scaled."""
        signed = np.int64 if self.bits == 64 else np.int32
        return total.astype(self.dtype, copy=False).view(signed).astype(np.float64)
