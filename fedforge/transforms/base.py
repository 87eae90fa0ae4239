"""The update pipeline: what happens to an update between ``fit`` and the aggregator.

A participant's update passes through a list of transforms on its way out
(``encode``, on the participant) and their inverses in reverse order on the
way in (``decode``, at the server). Every stage maps a ``dict[str, Tensor]``
to another, so quantization can turn ``{"w": f32}`` into ``{"w.q": u8,
"w.scale": f32}`` and sparsification into indices and values; the last
stage is serialized (safetensors, optionally zstd) and those bytes are what
the wire carries and what the history counts.

A transform declares:

- ``linear``: whether decoding commutes with summing (a sum of decoded
  updates equals the decoding of a sum). Secure aggregation needs every
  stage linear, and a non-linear aggregator (median) cannot follow a
  transform that needs a sum; both are refused at configuration time;
- per-participant state (e.g. error feedback's residual), kept by the
  pipeline per client id and saved with checkpoints.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Protocol

from torch import Tensor

from fedforge.params import ClientId

Tensors = dict[str, Tensor]
ClientState = MutableMapping[str, Tensor]


@dataclass(frozen=True)
class Context:
    """Where an update is in the federation: enough to derive shared randomness.

    ``seed`` is this participant's and the server's for this round (per participant);
    ``round_seed`` is one seed for the whole round, the same for every participant and
    known to the server (None where the caller has none). A transform whose encodings must
    line up across participants, so that they can be summed coordinate by coordinate
    (random-k under secure aggregation: ``RandomK(shared=True)``), draws from it.
    """

    round: int
    client: ClientId
    seed: int  # shared by this participant and the server for this round (e.g. random-k masks)
    round_seed: int | None = None  # shared by every participant of the round and the server


class PayloadError(ValueError):
    """An encoded update that cannot be decoded (corrupt, truncated, wrong layout)."""


class Transform(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def linear(self) -> bool: ...

    def encode(self, x: Tensors, ctx: Context, state: ClientState) -> Tensors:
        """Participant side. ``state`` is this participant's private, persistent state."""
        ...

    def decode(self, x: Tensors, ctx: Context) -> Tensors:
        """Server side: invert ``encode`` (exactly or approximately); raise PayloadError."""
        ...
