"""Local DP: each participant clips and noises its own update before it leaves.

``LocalGaussian`` is a participant-side transform: clip the update to S and
add N(0, (z S)^2) to every coordinate, so each released update is on its own
a Gaussian mechanism, whatever the server does with it afterwards (any
aggregator composes: the guarantee is post-processing-proof, so it needs no
linear aggregator). Local DP protects against the server and everyone else,
and pays for it: the mean of m such updates carries noise z S / sqrt(m) per
coordinate, sqrt(m) times more than central DP-FedAvg's z S / m.

Neighbouring inputs are *any* two datasets of the participant, so the clipped
update may move by 2S: the event is a Gaussian with multiplier z / 2 per
round, composed over rounds with no amplification by sampling (the
participant knows when it takes part; the accountant assumes every round).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import dp_accounting as dpa

from fedforge.components import register
from fedforge.privacy._checks import check_clip, check_noise_multiplier
from fedforge.privacy.accounting import Relation
from fedforge.privacy.clip import clip_update
from fedforge.privacy.noise import add_gaussian, participant_generator
from fedforge.transforms.base import ClientState, Context, Tensors

if TYPE_CHECKING:
    from fedforge.plugins import ServerView


# Sent to gRPC participants; not offered in the config file, where [privacy] is the
# accounted way to add noise.
@register("transform", "local_dp", in_config=False)
@dataclass(frozen=True)
class LocalGaussian:
    clip: float
    noise_multiplier: float
    seed: int | None = None  # None: a secret from the OS, kept in the participant's state
    name: str = field(default="local_dp", init=False)
    linear: bool = field(default=True, init=False)
    needs_linear_aggregator: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        check_clip(self.clip)
        check_noise_multiplier(self.noise_multiplier)

    def encode(self, x: Tensors, ctx: Context, state: ClientState) -> Tensors:
        clipped, _ = clip_update(x, self.clip)
        gen = participant_generator(state, ctx.round, ctx.client, self.seed, self.name)
        return add_gaussian(clipped, self.noise_multiplier * self.clip, gen)

    def decode(self, x: Tensors, ctx: Context) -> Tensors:
        return x

    # --- event source: one participant's guarantee ---------------------------------------

    @property
    def population(self) -> int | None:
        return None

    @property
    def relation(self) -> Relation:
        return Relation.ADD_OR_REMOVE_ONE

    def planned_event(self) -> dpa.DpEvent:
        return dpa.GaussianDpEvent(self.noise_multiplier / 2)  # replace: sensitivity 2S

    def spent_event(self) -> dpa.DpEvent:
        return self.planned_event()

    def check(self, server: ServerView) -> None:
        if self not in server.pipeline.transforms:
            raise ValueError(
                "the accountant counts local DP noise, but this LocalGaussian is not in the "
                "server's Pipeline: participants would send their updates without it"
            )
