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

In this simulation the participant code runs in the server process (inside
``add``); the ``Transcript`` records exactly the messages a real server
would see. A gRPC deployment runs ``Participant`` in the client process and
``Collector`` in the server, with the same messages.

Refused at configuration time, with the reason: a non-linear inner
aggregator (median, trimmed mean, Krum: they need individual updates, which
the server never sees) when the wrapper is built; a pipeline with a
non-linear transform (its decode does not commute with summing), a missing
``population`` and a round size that the graph and threshold cannot serve
when the ``Server`` is built (``Plugin.check``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from fedforge.aggregate.base import Aggregator
from fedforge.params import ClientId, Params
from fedforge.secagg.collector import Outcome, RoundAborted
from fedforge.secagg.config import SecAggConfig
from fedforge.secagg.dropout import DropoutPlan
from fedforge.secagg.layout import Layout
from fedforge.secagg.messages import Transcript
from fedforge.secagg.simulation import SimulatedRound, Tamper
from fedforge.server.plugins import Plugin
from fedforge.transforms.base import Transform
from fedforge.transforms.pipeline import Pipeline

if TYPE_CHECKING:
    from fedforge.server.history import Record
    from fedforge.server.server import Server

log = logging.getLogger(__name__)


def check_linear(inner: Aggregator) -> None:
    if not inner.linear:
        raise ValueError(
            f"secure aggregation needs a linear aggregator, and {inner.name!r} is not: the "
            "server only ever learns the sum of the masked updates, never an individual one, "
            "so it cannot take a median, trim, or score updates (Krum)"
        )


def check_pipeline(pipeline: Pipeline) -> None:
    """Refuse a pipeline with a transform whose decoding does not commute with a sum."""
    bad = [t.name for t in pipeline.transforms if not t.linear]
    if bad:
        raise ValueError(
            f"secure aggregation cannot follow non-linear transforms {bad}: the server decodes "
            "only the unmasked sum, so every transform must satisfy decode(a + b) = "
            "decode(a) + decode(b)"
        )


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
        population: Sequence[ClientId] | None = None,
        pipeline: Pipeline | None = None,
        compression: Transform | None = None,
        dropouts: Sequence[DropoutPlan] = (),
        tamper: Tamper | None = None,
        keep_payloads: bool = False,
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
        self.population = sorted(population) if population is not None else None
        self.dropouts = tuple(dropouts)
        self.tamper = tamper
        self.weighted = _weighted(inner)
        self.transcript = Transcript(keep_payloads=keep_payloads)
        self.round: SimulatedRound | None = None
        self.aborted: dict[int, str] = {}
        self.name = "secagg"

    @property
    def linear(self) -> bool:
        return True

    # --- Plugin ---------------------------------------------------------------------------
    def check(self, server: Server) -> None:
        """Refuse, with the reason, a server this cannot run in: a non-linear transform in
        its pipeline, no population, or a round size the graph and threshold cannot serve.
        (The server calls it when it is built; ``before_round`` checks again.)"""
        check_pipeline(server.pipeline)
        if self.population is None:
            raise ValueError(
                "SecureAggregator needs population=<client ids> to learn each round's "
                "participants from the server's sampler before the round starts"
            )
        n = server.sampler.count(len(self.population))
        self.config.plan(0, self.population[:n])  # raises ValueError with the reason

    def before_round(self, server: Server, round_: int) -> str | None:
        self.check(server)
        assert self.population is not None
        self.begin_round(round_, server.sampler.sample(round_, self.population), server.params)
        return None

    def begin_round(self, round_: int, participants: Sequence[ClientId], template: Params) -> None:
        """Run the setup stages among ``participants`` for a model shaped like ``template``."""
        self.layout = Layout.of(template, self.compression, round_, self.config.graph_seed)
        self.round = SimulatedRound(
            round_,
            participants,
            self.config,
            self.layout.dim,
            dropouts=self.dropouts,
            tamper=self.tamper,
            transcript=self.transcript,
        )
        try:
            self.round.setup()
        except RoundAborted as exc:
            self._abort(round_, str(exc))

    def _abort(self, round_: int, why: str) -> None:
        log.warning("round %d: secure aggregation aborted: %s", round_, why)
        self.aborted[round_] = why

    def after_round(self, server: Server, record: Record) -> None:
        sim = self.round
        if sim is None or sim.plan.round != record.get("round"):
            return
        r = sim.plan.round
        record["secagg_neighbours"] = max(len(v) for v in sim.plan.graph.values())
        record["secagg_threshold"] = sim.plan.threshold
        record["secagg_bytes_up"] = sum(self.transcript.bytes_up(r).values())
        record["secagg_bytes_down"] = sum(self.transcript.bytes_down(r).values())
        if sim.server.excluded:
            record["secagg_excluded"] = dict(sim.server.excluded)
        if r in self.aborted:
            record["secagg_aborted"] = self.aborted[r]

    def state(self) -> dict[str, Any]:
        return {}  # keys and shares are per round; nothing outlives it

    # --- Aggregator -----------------------------------------------------------------------
    def open(self, template: Params) -> _SecureSum:
        if self.round is None or self.layout is None:
            raise ValueError("secure aggregation round not set up: before_round never ran")
        return _SecureSum(self, self.round, self.layout)


class _SecureSum:
    """The accumulator: each ``add`` is one participant's masked input; ``result`` unmasks."""

    def __init__(self, owner: SecureAggregator, sim: SimulatedRound, layout: Layout) -> None:
        self._owner = owner
        self._sim = sim
        self._layout = layout
        self.count = 0
        self.outcome: Outcome | None = None
        self.refused: dict[ClientId, str] = {}

    def add(self, update: Params, weight: float, client: ClientId = "") -> None:
        r = self._sim.plan.round
        if r in self._owner.aborted:
            return
        a = float(weight) if self._owner.weighted else 1.0
        try:
            x = self._layout.vector(update)  # participant side: what it will mask
        except ValueError as exc:
            why: str | None = f"update does not fit the round's layout: {exc}"
        else:
            why = self._sim.submit(client, x, a)
        if why is not None:
            log.warning("round %d: masked input of %s not taken: %s", r, client, why)
            self.refused[client] = why
            return
        self.count += 1

    def result(self) -> Params:
        r = self._sim.plan.round
        if r in self._owner.aborted:
            raise RoundAborted(self._owner.aborted[r])
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
