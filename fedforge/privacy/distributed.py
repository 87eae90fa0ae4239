"""Distributed DP-FedAvg: every participant adds its share of the noise.

The central mechanism (``central``) trusts the server with a noiseless sum.
Here each of the m expected participants clips its update to S and adds
N(0, (z S)^2 / m) *before* it leaves (``DistributedNoise``, a participant-side
transform); the m shares sum to N(0, (z S)^2), the same noise as central
DP-FedAvg, so with secure aggregation the server only ever sees the noisy
sum. The server side (``DistributedDPFedAvg``) just sums and divides by the
fixed denominator m; it stays linear.

If fewer than m participants answer (dropouts), less noise was added: the
round's event then carries z * sqrt(k / m) for the k that arrived, so the
epsilon reported is what the round really cost. (More than m answering adds
more noise; it is not counted, to stay conservative.)

Each participant's noise comes from a secret in its own state, not from the
round seed that the server also knows (see ``noise.participant_generator``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dp_accounting as dpa

from fedforge.aggregate.base import Accumulator, Aggregator
from fedforge.aggregate.linear import Mean, Sum, WeightedMean
from fedforge.params import ClientId, Params, scale
from fedforge.plugins import Plugin
from fedforge.privacy._checks import check_clip, check_noise_multiplier, check_positive_int
from fedforge.privacy.accounting import Relation
from fedforge.privacy.central import check_sampler
from fedforge.privacy.clip import clip_update
from fedforge.privacy.compat import refuse_nonlinear
from fedforge.privacy.noise import add_gaussian, participant_generator
from fedforge.privacy.sampling import Sampling
from fedforge.transforms.base import ClientState, Context, Tensors

if TYPE_CHECKING:
    from fedforge.plugins import ServerView
    from fedforge.server.history import Record


@dataclass(frozen=True)
class DistributedNoise:
    """Participant side: clip to ``clip`` and add N(0, (z clip)^2 / shares)."""

    clip: float
    noise_multiplier: float
    shares: int  # m, the expected number of participants per round
    seed: int | None = None  # None: a secret from the OS, kept in the participant's state
    name: str = field(default="distributed_dp", init=False)
    linear: bool = field(default=True, init=False)
    needs_linear_aggregator: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        check_clip(self.clip)
        check_noise_multiplier(self.noise_multiplier)
        check_positive_int(self.shares, "shares")

    @property
    def std(self) -> float:
        return self.noise_multiplier * self.clip / math.sqrt(self.shares)

    def encode(self, x: Tensors, ctx: Context, state: ClientState) -> Tensors:
        clipped, _ = clip_update(x, self.clip)
        gen = participant_generator(state, ctx.round, ctx.client, self.seed, self.name)
        return add_gaussian(clipped, self.std, gen)

    def decode(self, x: Tensors, ctx: Context) -> Tensors:
        return x


class DistributedDPFedAvg(Plugin):
    """Server side: sum the noisy shares, divide by m, and emit the round's event."""

    name = "distributed_dp_fedavg"

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip: float,
        sampling: Sampling,
        inner: Aggregator | None = None,
        seed: int | None = None,
    ) -> None:
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        self.clip = check_clip(clip)
        self.sampling = sampling
        self.seed = seed
        self.inner: Aggregator = inner if inner is not None else Sum()
        refuse_nonlinear(self.inner, "distributed DP-FedAvg")
        if isinstance(self.inner, Mean | WeightedMean):
            raise ValueError(
                f"distributed DP-FedAvg's inner aggregator must compute a sum, got "
                f"{self.inner.name!r}; the fixed denominator m replaces its division"
            )
        self.arrived: int | None = None

    def participant_transform(self) -> DistributedNoise:
        """The transform every participant must run (put it in the server's ``Pipeline``)."""
        return DistributedNoise(
            self.clip, self.noise_multiplier, self.sampling.per_round, self.seed
        )

    @property
    def linear(self) -> bool:
        return True

    def open(self, template: Params) -> _FixedDenominatorSum:
        self.arrived = None
        return _FixedDenominatorSum(self, self.inner.open(template))

    # --- plugin and event source ---------------------------------------------------------

    def after_round(self, server: ServerView, record: Record) -> None:
        if self.arrived is not None:
            record["noise_multiplier"] = self._effective(self.arrived)

    def state(self) -> dict[str, Any]:
        return {}

    @property
    def population(self) -> int | None:
        return self.sampling.population

    @property
    def relation(self) -> Relation:
        return self.sampling.relation

    def _effective(self, arrived: int) -> float:
        m = self.sampling.per_round
        return self.noise_multiplier * math.sqrt(min(arrived, m) / m)

    def planned_event(self) -> dpa.DpEvent:
        return self.sampling.gaussian_round(self.noise_multiplier)

    def spent_event(self) -> dpa.DpEvent:
        if self.arrived is None:  # result() not called: nothing was released
            return dpa.NoOpDpEvent()
        return self.sampling.gaussian_round(self._effective(self.arrived))

    def check(self, server: ServerView) -> None:
        want = self.participant_transform()
        found = [t for t in server.pipeline.transforms if isinstance(t, DistributedNoise)]
        if not any(
            (t.clip, t.noise_multiplier, t.shares)
            == (want.clip, want.noise_multiplier, want.shares)
            for t in found
        ):
            raise ValueError(
                "distributed DP-FedAvg needs every participant to clip to "
                f"{want.clip} and add its noise share (z={want.noise_multiplier}, m={want.shares}); "
                "put aggregator.participant_transform() in the server's Pipeline"
                + (f" (found {found})" if found else "")
            )
        if server.aggregator is not self:
            raise ValueError(
                "the accountant counts distributed DP-FedAvg's noise, but the server aggregates "
                f"with {server.aggregator.name!r}: pass this DistributedDPFedAvg as its aggregator"
            )
        check_sampler(server, self.sampling)


class _FixedDenominatorSum:
    def __init__(self, owner: DistributedDPFedAvg, inner: Accumulator) -> None:
        self.owner = owner
        self.inner = inner
        self.count = 0

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        self.inner.add(update, 1.0, client)
        self.count += 1

    def result(self) -> Params:
        self.owner.arrived = self.count
        return scale(self.inner.result(), 1.0 / self.owner.sampling.per_round)

    def report(self) -> dict[ClientId, float]:
        return {}
