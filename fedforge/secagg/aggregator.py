"""``SecureAggregator``: SecAgg+ inside the server's round, as an Aggregator and a Plugin.

How it plugs in. The server's round has two seams secure aggregation must
touch: *before* any update exists (keys and shares must be exchanged among
the round's participants before anyone masks) and *at aggregation* (the
server may only ever hold a running sum of masked words). The wrapper takes
both without a change to ``Server``:

- ``before_round(server, round_)`` (Plugin) learns the round's participants
  from the server's deterministic sampler (``server.sampler.sample(round_,
  population)``) and runs the setup stages among them: advertise keys,
  share keys, check shares;
- ``open(template)`` (Aggregator) returns an accumulator whose ``add(update,
  weight, client)`` is the participant's masked-input stage: the
  participant clips, weights, quantizes and masks its own update, and only
  the masked words reach the server's running sum (memory O(model));
- ``result()`` runs the unmasking stage with the survivors (those that were
  added) and returns the inner aggregator's answer (weighted mean, mean or
  sum), computed from the unmasked weighted sum;
- ``compression`` (optional, a linear transform such as ``RandomK``) is
  applied by every participant under one shared per-round seed, so only the
  kept values are masked and sent, and the server decodes the sum once
  (see ``layout``);
- ``after_round`` writes who dropped or was excluded, the protocol bytes and
  an abort reason into the round's record.

Why this and not a transform: a ``Transform`` sees one update and cannot
know the round's participants or their keys; a server-side ``decode`` of a
single masked update cannot be done at all, only of the sum. Why not a
server subclass: STYLE asks features that cut across the round to wrap an
aggregator (TFF's secure sum), and DP wrappers compose around this one the
same way (clip on the participant via ``SecAggConfig.clip_norm``, noise
either distributed via ``noise_std`` or added by an outer DP wrapper after
unmasking).

Nested inside another wrapper (``DPFedAvg(inner=SecureAggregator(Sum()))``)
the server does not see it as its aggregator, so pass it in ``plugins=[...]``
too, that its ``before_round`` runs.

Aborts: if too few participants remain during setup, every ``add`` of the
round is ignored, ``count`` stays 0 and the server skips the round (model
unchanged) with the reason in the record; the next round sets up afresh. If
unmasking fails in ``result()`` it raises ``RoundAborted`` (a ``ValueError``)
with the reason; the server has to catch it to skip the round (see the
report for the two-line change to ``Server.fit_round``).

Where the participant side runs is the ``channel``'s business. Without one
(simulation) the participant code runs in the server process (inside
``add``, a ``SimulatedRound``); the ``Transcript`` records exactly the
messages a real server would see. With ``channel=GrpcSecAgg(registry)``
(``fedforge.transport.secagg``) every ``Participant`` runs in its own
participant process: the setup and unmasking stages are tasks sent over
gRPC, each participant masks its own update inside its ``fit`` task and
returns only the masked words, and the server's ``Collector`` sees the same
messages as in simulation, so the same federation ends with the same model
(the masks cancel exactly; see ``tests/test_secagg_grpc.py``). ``population``
may then be the live ``Registry``: each round's participants are sampled from
whoever is connected.

Refused at configuration time, with the reason: a non-linear inner
aggregator (median, trimmed mean, Krum: they need individual updates, which
the server never sees) when the wrapper is built; a pipeline with a
non-linear transform (its decode does not commute with summing) or with
per-participant random-k (``RandomK(shared=False)``: each participant would
keep other coordinates, so masked vectors would not line up; use
``RandomK(shared=True)``, seeded per round), a missing ``population`` and a
round size that the graph and threshold cannot serve when the ``Server`` is
built (``Plugin.check``), and whatever the channel cannot carry.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from fedforge.aggregate.base import Aggregator
from fedforge.params import ClientId, Params
from fedforge.plugins import Plugin
from fedforge.secagg.collector import Collector, Outcome, RoundAborted
from fedforge.secagg.config import RoundPlan, SecAggConfig
from fedforge.secagg.dropout import DropoutPlan
from fedforge.secagg.layout import Layout
from fedforge.secagg.messages import Transcript
from fedforge.secagg.simulation import SimulatedRound, Tamper
from fedforge.transforms.base import Transform
from fedforge.transforms.pipeline import Pipeline
from fedforge.transforms.randomk import RandomK

if TYPE_CHECKING:
    from fedforge.plugins import ServerView
    from fedforge.server.history import Record

log = logging.getLogger(__name__)


def check_linear(inner: Aggregator) -> None:
    if not inner.linear:
        raise ValueError(
            f"secure aggregation needs a linear aggregator, and {inner.name!r} is not: the "
            "server only ever learns the sum of the masked updates, never an individual one, "
            "so it cannot take a median, trim, or score updates (Krum)"
        )


def check_pipeline(pipeline: Pipeline) -> None:
    """Refuse a pipeline with a transform whose decoding does not commute with a sum, or
    with random-k whose mask is drawn per participant."""
    bad = [t.name for t in pipeline.transforms if not t.linear]
    if bad:
        raise ValueError(
            f"secure aggregation cannot follow non-linear transforms {bad}: the server decodes "
            "only the unmasked sum, so every transform must satisfy decode(a + b) = "
            "decode(a) + decode(b)"
        )
    private = [t.name for t in pipeline.transforms if isinstance(t, RandomK) and not t.shared]
    if private:
        raise ValueError(
            f"secure aggregation cannot sum per-participant random-k {private}: each "
            "participant would keep different coordinates (its mask comes from its own "
            "seed), so the masked sparse vectors do not line up; use RandomK(..., "
            "shared=True), whose mask comes from the round's seed, shared by every "
            "participant of the round and the server"
        )


class RoundDriver(Protocol):
    """One round's participant side as the aggregator drives it: in process
    (``SimulatedRound``) or over a transport (``fedforge.transport.secagg.RemoteRound``)."""

    plan: RoundPlan
    server: Collector

    def setup(self) -> None:
        """Advertise keys, share keys, check shares; ``RoundAborted`` below the threshold."""
        ...

    def add(self, cid: ClientId, update: Params, weight: float, layout: Layout) -> str | None:
        """Mask ``cid``'s update (a simulated participant) and take it into the sum;
        returns why not, or None."""
        ...

    def add_masked(self, cid: ClientId, words: Tensor, weight: float) -> str | None:
        """Take the masked words ``cid`` sent (a remote participant masked them); returns
        why not, or None."""
        ...

    def finish(self) -> Outcome:
        """Unmask the sum; ``RoundAborted`` with the reason."""
        ...


class Channel(Protocol):
    """Where participants run: opens each round's ``RoundDriver``."""

    def check(self, aggregator: SecureAggregator, server: ServerView) -> None:
        """Raise ``ValueError`` for a server configuration this channel cannot carry."""
        ...

    def open_round(
        self,
        round_: int,
        participants: Sequence[ClientId],
        config: SecAggConfig,
        layout: Layout,
        *,
        weighted: bool,
        transcript: Transcript,
    ) -> RoundDriver:
        """The round's driver (``ValueError`` if the round cannot be planned)."""
        ...


def _weighted(inner: Aggregator) -> bool:
    """Whether ``inner`` weights updates by their weight (probed on two unit vectors)."""
    acc = inner.open({"x": torch.zeros(2, dtype=torch.float64)})
    acc.add({"x": torch.tensor([1.0, 0.0], dtype=torch.float64)}, 1.0, "probe-a")
    acc.add({"x": torch.tensor([0.0, 1.0], dtype=torch.float64)}, 3.0, "probe-b")
    a, b = acc.result()["x"].tolist()
    if a != 0 and math.isclose(b / a, 3.0):
        return True
    if a != 0 and math.isclose(b / a, 1.0):
        return False
    raise ValueError(
        f"secure aggregation cannot reproduce {inner.name!r}: it weights updates neither by "
        "their weight nor equally"
    )


class SecureAggregator(Plugin):
    """Secure aggregation (SecAgg+) around a linear aggregator; see the module docstring."""

    def __init__(
        self,
        inner: Aggregator,
        config: SecAggConfig | None = None,
        *,
        population: Collection[ClientId] | None = None,
        pipeline: Pipeline | None = None,
        compression: Transform | None = None,
        dropouts: Sequence[DropoutPlan] = (),
        tamper: Tamper | None = None,
        keep_payloads: bool = False,
        transcript: Transcript | None = None,
        channel: Channel | None = None,
    ) -> None:
        check_linear(inner)
        if pipeline is not None:
            check_pipeline(pipeline)
        if compression is not None:
            check_pipeline(Pipeline([compression]))
        self.inner = inner
        self.compression = compression
        self.layout: Layout | None = None
        self.config = config or SecAggConfig()
        # a fixed list, or a live collection (a transport Registry) read each round
        self._population = population
        self.dropouts = tuple(dropouts)
        self.tamper = tamper
        self.channel = channel
        if channel is not None and (dropouts or tamper is not None):
            raise ValueError(
                "dropouts and tamper simulate participants in process; with a channel the "
                "participants are real and drop out by themselves"
            )
        self.weighted = _weighted(inner)
        self.transcript = transcript if transcript is not None else Transcript(keep_payloads)
        self.round: RoundDriver | None = None
        self.current: int | None = None  # the round being set up or aggregated
        self.aborted: dict[int, str] = {}
        self.name = "secagg"

    @property
    def population(self) -> list[ClientId] | None:
        """The participants to sample from now (sorted), or None if none was given."""
        return None if self._population is None else sorted(self._population)

    @property
    def linear(self) -> bool:
        return True

    # --- Plugin ---------------------------------------------------------------------------
    def check(self, server: ServerView) -> None:
        """Refuse, with the reason, a server this cannot run in: a non-linear transform in
        its pipeline, no population, or a round size the graph and threshold cannot serve.
        (The server calls it when it is built; ``before_round`` checks again.)"""
        members = self._check_setting(server)
        if not members and self.channel is not None:
            return  # a live registry nobody joined yet: checked again before each round
        n = server.sampler.count(len(members))
        self.config.plan(0, members[:n])  # raises ValueError with the reason

    def _check_setting(self, server: ServerView) -> list[ClientId]:
        """What does not depend on who is connected; returns the population now."""
        check_pipeline(server.pipeline)
        if self.channel is not None:
            self.channel.check(self, server)
        members = self.population
        if members is None:
            raise ValueError(
                "SecureAggregator needs population=<client ids> to learn each round's "
                "participants from the server's sampler before the round starts"
            )
        return members

    def before_round(self, server: ServerView, round_: int) -> str | None:
        if self.channel is None:
            self.check(server)
        else:  # who is connected changes: a round too small is skipped, not the run
            self._check_setting(server)
        members = self.population
        assert members is not None
        try:
            participants = server.sampler.sample(round_, members)
        except ValueError as exc:  # too few connected: the round is skipped, not the run
            self.round, self.layout, self.current = None, None, round_
            self._abort(round_, f"cannot sample the round's participants: {exc}")
            return None
        self.begin_round(round_, participants, server.params)
        return None

    def begin_round(self, round_: int, participants: Sequence[ClientId], template: Params) -> None:
        """Run the setup stages among ``participants`` for a model shaped like ``template``."""
        self.aborted.pop(round_, None)
        self.current = round_
        self.layout = Layout.of(template, self.compression, round_, self.config.graph_seed)
        self.round = None
        try:
            if self.channel is None:
                self.round = SimulatedRound(
                    round_,
                    participants,
                    self.config,
                    self.layout.dim,
                    dropouts=self.dropouts,
                    tamper=self.tamper,
                    transcript=self.transcript,
                )
            else:
                self.round = self.channel.open_round(
                    round_,
                    participants,
                    self.config,
                    self.layout,
                    weighted=self.weighted,
                    transcript=self.transcript,
                )
            self.round.setup()
        except RoundAborted as exc:
            self._abort(round_, str(exc))
        except ValueError as exc:  # the round's size does not fit the graph and threshold
            if self.channel is None:
                raise
            self._abort(round_, str(exc))

    def _abort(self, round_: int, why: str) -> None:
        log.warning("round %d: secure aggregation aborted: %s", round_, why)
        self.aborted[round_] = why

    def after_round(self, server: ServerView, record: Record) -> None:
        r = record.get("round")
        if r in self.aborted:
            record["secagg_aborted"] = self.aborted[r]
        sim = self.round
        if sim is None or sim.plan.round != r:
            return
        record["secagg_neighbours"] = max(len(v) for v in sim.plan.graph.values())
        record["secagg_threshold"] = sim.plan.threshold
        record["secagg_bytes_up"] = sum(self.transcript.bytes_up(r).values())
        record["secagg_bytes_down"] = sum(self.transcript.bytes_down(r).values())
        if sim.server.excluded:
            record["secagg_excluded"] = dict(sim.server.excluded)

    def state(self) -> dict[str, Any]:
        return {}  # keys and shares are per round; nothing outlives it

    # --- Aggregator -----------------------------------------------------------------------
    def open(self, template: Params) -> _SecureSum:
        r = self.current
        if r is None:
            raise ValueError("secure aggregation round not set up: before_round never ran")
        layout = self.layout or Layout.of(template, self.compression, r, self.config.graph_seed)
        sim = self.round if self.round is not None and self.round.plan.round == r else None
        return _SecureSum(self, r, sim, layout)  # sim None: aborted before it was planned


class _SecureSum:
    """The accumulator: each ``add`` is one participant's masked input; ``result`` unmasks."""

    def __init__(
        self, owner: SecureAggregator, round_: int, sim: RoundDriver | None, layout: Layout
    ) -> None:
        self._owner = owner
        self._round = round_
        self._sim = sim
        self._layout = layout
        self.count = 0
        self.outcome: Outcome | None = None
        self.refused: dict[ClientId, str] = {}

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        r = self._round
        if r in self._owner.aborted or self._sim is None:
            return
        a = float(weight) if self._owner.weighted else 1.0
        why = self._sim.add(client, update, a, self._layout)
        if why is not None:
            log.warning("round %d: masked input of %s not taken: %s", r, client, why)
            self.refused[client] = why
            return
        self.count += 1

    def add_masked(self, words: Tensor, weight: float, client: ClientId) -> None:
        r = self._round
        if r in self._owner.aborted or self._sim is None:
            return
        a = float(weight) if self._owner.weighted else 1.0
        why = self._sim.add_masked(client, words, a)
        if why is not None:
            log.warning("round %d: masked input of %s not taken: %s", r, client, why)
            self.refused[client] = why
            return
        self.count += 1

    def result(self) -> Params:
        r = self._round
        if r in self._owner.aborted or self._sim is None:
            raise RoundAborted(self._owner.aborted.get(r, "secure aggregation round not set up"))
        try:
            out = self._sim.finish()
        except RoundAborted as exc:
            self._owner._abort(r, str(exc))
            raise
        self.outcome = out
        # The inner aggregator's coefficients are proportional to a_u (checked at
        # construction), so its answer is factor * Σ a_u x_u; ask it for the factor.
        total_a = sum(out.weights.values())
        probe = self._owner.inner.open({"x": torch.zeros(1, dtype=torch.float64)})
        for cid in out.included:
            probe.add(
                {"x": torch.tensor([1.0 / total_a], dtype=torch.float64)}, out.weights[cid], cid
            )
        factor = float(probe.result()["x"][0])
        return self._layout.params(out.total * factor)

    def report(self) -> dict[ClientId, float]:
        return {}
