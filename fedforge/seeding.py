"""Stable seed derivation: every random choice in a run comes from (run seed, names).

Python's ``hash`` is salted per process, so seeds are derived with BLAKE2b
instead; the same (seed, round, client) gives the same number in any process,
on any machine, after any restart (DESIGN invariant 3).
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed determined by ``seed`` and the ``names`` path, e.g. (round, client id)."""
    text = "/".join([str(seed), *map(str, names)]).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") & (2**63 - 1)
