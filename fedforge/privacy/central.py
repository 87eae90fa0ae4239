"""Participant-level DP-FedAvg with noise added at the server (McMahan et al. 2018,
"Learning Differentially Private Recurrent Language Models").

``DPFedAvg`` wraps a linear sum aggregator, TFF style, instead of subclassing
FedAvg. Each round:

    clip        Delta_i <- Delta_i * min(1, S / ||Delta_i||)      (participant's sensitivity S)
    sum         s = sum_i Delta_i                                  (streamed by ``inner``)
    noise       s~ = s + N(0, (z S)^2 I)
    average     s~ / m                                             (fixed denominator)

with m the *expected* number of participants (``sampling.per_round``), not the
number that answered: dividing by the actual count would make the average's
sensitivity depend on who took part. Updates count equally (no example
weights), so each participant's influence is bounded by S. The result stays
linear in the updates, so a secure-sum ``inner`` composes.

With ``clip=AdaptiveClip(...)`` the bound S follows a target quantile of the
update norms (Andrew et al. 2021, see ``adaptive``); the bound is plugin state,
saved in checkpoints, and the update noise uses z_delta so that update and
count together still cost one Gaussian with multiplier z.

Each round emits ``sampling.gaussian_round(z)`` for the accountant. The noise
is drawn from a generator seeded by (run seed, round): the server is trusted
in this central model, and a resumed run replays the same noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dp_accounting as dpa
import torch

from fedforge.aggregate.base import Accumulator, Aggregator
from fedforge.aggregate.linear import Mean, Sum, WeightedMean
from fedforge.params import ClientId, Params, scale
from fedforge.plugins import Plugin
from fedforge.privacy._checks import check_clip, check_noise_multiplier
from fedforge.privacy.accounting import Relation
from fedforge.privacy.adaptive import AdaptiveClip, next_bound, update_noise_multiplier
from fedforge.privacy.clip import clip_update
from fedforge.privacy.compat import refuse_nonlinear
from fedforge.privacy.noise import add_gaussian, generator
from fedforge.privacy.sampling import Sampling
from fedforge.seeding import derive_seed

if TYPE_CHECKING:
    from fedforge.plugins import ServerView
    from fedforge.server.history import Record


@dataclass(frozen=True)
class Release:
    """What one round's ``result`` released, for the record and the clip update."""

    clip: float
    participants: int
    unclipped_fraction: float | None  # noised estimate b~ (adaptive only: the exact one is private)
    next_clip: float


class DPFedAvg(Plugin):
    """Aggregator (and plugin) for central DP-FedAvg; see the module docstring."""

    name = "dp_fedavg"

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip: float | AdaptiveClip,
        sampling: Sampling,
        inner: Aggregator | None = None,
    ) -> None:
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        self.sampling = sampling
        self.inner: Aggregator = inner if inner is not None else Sum()
        refuse_nonlinear(self.inner, "DP-FedAvg")
        if isinstance(self.inner, Mean | WeightedMean):
            raise ValueError(
                f"DP-FedAvg's inner aggregator must compute a sum, got {self.inner.name!r}: it "
                "divides by the participants that answered, which DP-FedAvg replaces by the "
                "fixed expected count so that the sensitivity stays S / m"
            )
        self.adaptive: AdaptiveClip | None = None
        if isinstance(clip, AdaptiveClip):
            self.adaptive, self.clip = clip, clip.initial
        else:
            self.clip = check_clip(clip)
        m = sampling.per_round
        self.count_noise = self.adaptive.sigma_b(m) if self.adaptive else 0.0
        self.update_noise = (
            update_noise_multiplier(self.noise_multiplier, self.count_noise)
            if self.adaptive
            else self.noise_multiplier
        )
        self.seed = derive_seed(0, "dp-fedavg", 0)
        self.last: Release | None = None

    # --- aggregator ----------------------------------------------------------------------

    @property
    def linear(self) -> bool:
        return True

    def open(self, template: Params) -> _Accumulator:
        self.last = None
        return _Accumulator(self, self.inner.open(template), self.clip)

    # --- plugin --------------------------------------------------------------------------

    def before_round(self, server: ServerView, round_: int) -> str | None:
        self.seed = derive_seed(server.seed, "dp-fedavg", round_)
        return None

    def after_round(self, server: ServerView, record: Record) -> None:
        if self.last is None:
            return
        record["clip"] = self.last.clip
        if self.last.unclipped_fraction is not None:
            record["unclipped_fraction"] = self.last.unclipped_fraction
        self.clip = self.last.next_clip

    def state(self) -> dict[str, Any]:
        return {"clip": self.clip}

    def load_state(self, state: dict[str, Any]) -> None:
        self.clip = check_clip(float(state["clip"]), "saved clip")

    # --- event source --------------------------------------------------------------------

    @property
    def population(self) -> int | None:
        return self.sampling.population

    @property
    def relation(self) -> Relation:
        return self.sampling.relation

    def planned_event(self) -> dpa.DpEvent:
        # (z_delta on the sum, 2 sigma_b on the count) is one Gaussian with multiplier z
        return self.sampling.gaussian_round(self.noise_multiplier)

    def spent_event(self) -> dpa.DpEvent:
        return self.planned_event()

    def check(self, server: ServerView) -> None:
        if server.aggregator is not self:
            raise ValueError(
                "the privacy accountant counts DP-FedAvg's noise, but the server aggregates "
                f"with {server.aggregator.name!r}: pass this DPFedAvg as the server's aggregator"
            )
        check_sampler(server, self.sampling)


def check_sampler(server: ServerView, sampling: Sampling) -> None:
    k = server.sampler.count(sampling.population)
    if k != sampling.per_round:
        raise ValueError(
            f"the server samples {k} of {sampling.population} participants per round, but the "
            f"DP mechanism divides by and accounts for {sampling.per_round}: make them agree"
        )


class _Accumulator:
    def __init__(self, owner: DPFedAvg, inner: Accumulator, clip: float) -> None:
        self.owner = owner
        self.inner = inner
        self.clip = clip
        self.count = 0
        self.unclipped = 0

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        clipped, norm = clip_update(update, self.clip)
        self.inner.add(clipped, 1.0, client)  # equal weights: influence bounded by S
        self.count += 1
        self.unclipped += int(norm <= self.clip)

    def result(self) -> Params:
        o = self.owner
        m = o.sampling.per_round
        gen = generator(o.seed)
        noisy = add_gaussian(self.inner.result(), o.update_noise * self.clip, gen)
        frac: float | None = None
        nxt = self.clip
        if o.adaptive is not None:
            # centred count: sensitivity 1/2 (module docstring of ``adaptive``)
            centred = (
                self.unclipped
                - self.count / 2
                + o.count_noise * float(torch.randn((), generator=gen, dtype=torch.float64))
            )
            frac = centred / m + 0.5
            nxt = next_bound(self.clip, frac, o.adaptive.target_quantile, o.adaptive.learning_rate)
        o.last = Release(self.clip, self.count, frac, nxt)
        return scale(noisy, 1.0 / m)

    def report(self) -> dict[ClientId, float]:
        return {}
