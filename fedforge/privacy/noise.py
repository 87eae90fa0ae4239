"""Seeded Gaussian noise shaped like a model: the one noise primitive of the mechanisms.

``torch.Generator`` is a Mersenne twister, fine for simulation and for
reproducible runs (DESIGN invariant 3) but not a cryptographic source; a
deployment that must resist an attacker who can predict floating-point noise
needs a secure generator (cf. Opacus' ``secure_mode``).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, MutableMapping

import torch
from torch import Tensor

from fedforge.params import Params
from fedforge.seeding import derive_seed


def gaussian_like(template: Mapping[str, Tensor], std: float, generator: torch.Generator) -> Params:
    """Independent N(0, std^2) for every coordinate of ``template`` (float tensors only)."""
    if std < 0:
        raise ValueError(f"noise std must be >= 0, got {std}")
    out: Params = {}
    for k, v in template.items():
        if not v.is_floating_point():
            raise ValueError(f"cannot add Gaussian noise to non-float tensor {k!r} ({v.dtype})")
        out[k] = torch.randn(v.shape, generator=generator, dtype=v.dtype) * std
    return out


def add_gaussian(x: Mapping[str, Tensor], std: float, generator: torch.Generator) -> Params:
    """``x + N(0, std^2 I)``; a new dict, ``x`` untouched."""
    noise = gaussian_like(x, std, generator)
    return {k: v + noise[k] for k, v in x.items()}


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def participant_generator(
    state: MutableMapping[str, Tensor], round_: int, client: str, seed: int | None, tag: str
) -> torch.Generator:
    """A generator for noise that only the participant knows.

    The transform ``Context.seed`` is shared with the server, which could
    regenerate and subtract noise drawn from it, so participant-side noise
    comes from a secret kept in the participant's own state instead: drawn
    from the OS on first use, or derived from ``seed`` (simulation, for
    bit-reproducible runs; then the secret is only as private as ``seed``).
    """
    if "secret" not in state:
        secret = derive_seed(seed, tag, client) if seed is not None else secrets.randbits(63)
        state["secret"] = torch.tensor(secret, dtype=torch.int64)
    return generator(derive_seed(int(state["secret"]), tag, round_))
