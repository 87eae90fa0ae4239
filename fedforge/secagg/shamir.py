"""Shamir t-of-n secret sharing over the prime field GF(2^521 - 1).

Shamir, "How to Share a Secret" (CACM 1979). A secret ``s`` becomes the
constant term of a random polynomial ``f`` of degree ``t - 1``; participant
``x`` (a nonzero field element) receives ``f(x)``. Any ``t`` shares determine
``f`` and so ``s = f(0)`` by Lagrange interpolation; any ``t - 1`` shares are
consistent with every possible secret, so they reveal nothing about it.

The field is the Mersenne prime ``2^521 - 1``, large enough that a 32-byte
secret (an X25519 private key, a self-mask seed) is one field element: no
chunking and no bias. A share is 66 bytes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

from fedforge.secagg.prg import Randomness

PRIME = 2**521 - 1
SHARE_BYTES = 66  # ceil(521 / 8)
_RANDOM_BYTES = 66
_TOP = 2**521 - 1  # mask to 521 bits before rejection


def _random_element(rng: Randomness) -> int:
    # Rejection sampling keeps the coefficient exactly uniform on [0, PRIME).
    while True:
        v = int.from_bytes(rng.token(_RANDOM_BYTES), "big") & _TOP
        if v < PRIME:
            return v


def split(secret: int, threshold: int, xs: Sequence[int], rng: Randomness) -> list[int]:
    """Shares ``f(x)`` for each ``x`` in ``xs`` of a random degree ``threshold - 1`` polynomial
    with ``f(0) = secret``."""
    if not 0 <= secret < PRIME:
        raise ValueError("secret must be a field element in [0, 2^521 - 1)")
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold}")
    if len(xs) < threshold:
        raise ValueError(f"{len(xs)} shares can never reach threshold {threshold}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share points must be distinct and nonzero")
    coeffs = [secret] + [_random_element(rng) for _ in range(threshold - 1)]
    out = []
    for x in xs:
        acc = 0
        for c in reversed(coeffs):  # Horner
            acc = (acc * x + c) % PRIME
        out.append(acc)
    return out


def _inverses(values: Sequence[int]) -> list[int]:
    """Modular inverses of nonzero field elements with one exponentiation (Montgomery's
    batch trick: invert the product, then peel the factors off)."""
    prefix = [1] * (len(values) + 1)
    for i, v in enumerate(values):
        prefix[i + 1] = prefix[i] * v % PRIME
    inv = pow(prefix[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = inv * prefix[i] % PRIME
        inv = inv * values[i] % PRIME
    return out


@lru_cache(maxsize=1024)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Coefficients ``L_i(0)`` with ``f(0) = Σ L_i(0) f(x_i)`` for a polynomial through ``xs``.

    ``L_i(0) = Π_{j≠i} x_j / Π_{j≠i} (x_j - x_i)``. The points are small integers (a
    participant's 1-based position), so both products are taken exactly in integers (a few
    hundred bits for a hundred points: cheap) and reduced once, and the ``t`` divisions
    cost one modular inversion together. Cached: a server rebuilds many secrets from the
    same responders' points."""
    if len(set(xs)) != len(xs):
        raise ValueError("shares with the same point")
    everything = math.prod(xs)
    nums, dens = [], []
    for i, xi in enumerate(xs):
        diffs = [xj - xi for xj in xs]
        diffs[i] = 1
        nums.append(everything // xi % PRIME)  # exact: xi divides the product
        dens.append(math.prod(diffs) % PRIME)
    return tuple(n * v % PRIME for n, v in zip(nums, _inverses(dens), strict=True))


def reconstruct(points: Sequence[tuple[int, int]], threshold: int) -> int:
    """``f(0)`` from the first ``threshold`` of ``points`` (pairs ``(x, f(x))``)."""
    if len(points) < threshold:
        raise ValueError(f"{len(points)} shares, fewer than the threshold {threshold}")
    pts = points[:threshold]
    coeffs = lagrange_at_zero(tuple(x for x, _ in pts))
    return sum(c * y for c, (_, y) in zip(coeffs, pts, strict=True)) % PRIME


def to_bytes(v: int) -> bytes:
    return v.to_bytes(SHARE_BYTES, "big")


def from_bytes(b: bytes) -> int:
    if len(b) != SHARE_BYTES:
        raise ValueError(f"a share has {SHARE_BYTES} bytes, got {len(b)}")
    v = int.from_bytes(b, "big")
    if v >= PRIME:
        raise ValueError("share is not a field element")
    return v
