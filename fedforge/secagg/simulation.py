"""One SecAgg+ round among in-process participants: the simulation driver.

``SimulatedRound`` owns the round's ``Participant`` objects and its
``Collector`` and carries every message between them through ``_post``,
which records it in the ``Transcript`` (what the server sees) and lets a
``tamper`` hook rewrite it in transit (to simulate a misbehaving sender). A
``DropoutPlan`` silences participants after a stage. The stages are the
methods, called in order:

    setup()                advertise keys, share keys, check shares
    submit(cid, x, w)      masked input, once per participant that has one
    finish()               unmask: the weighted sum, or ``RoundAborted``

Over gRPC ``fedforge.transport.secagg.RemoteRound`` replaces this driver and
keeps ``Participant`` (in each participant's process) and ``Collector`` (in
the server) as they are: both speak only in the message payloads here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from torch import Tensor

from fedforge.params import ClientId, Params
from fedforge.secagg.collector import Collector, Outcome, RoundAborted
from fedforge.secagg.config import RoundPlan, SecAggConfig
from fedforge.secagg.dropout import DropoutPlan, schedule
from fedforge.secagg.layout import Layout
from fedforge.secagg.messages import ID_BYTES, SERVER, Stage, Transcript
from fedforge.secagg.participant import Participant, PublicKeys, Refused, UnmaskShares
from fedforge.secagg.prg import Randomness, SeededRandomness, SystemRandomness

log = logging.getLogger(__name__)

Tamper = Callable[[Stage, ClientId, ClientId, object], object]
T = TypeVar("T")


class SimulatedRound:
    def __init__(
        self,
        round_: int,
        participants: Sequence[ClientId],
        config: SecAggConfig,
        dim: int,
        *,
        dropouts: Sequence[DropoutPlan] = (),
        tamper: Tamper | None = None,
        transcript: Transcript | None = None,
    ) -> None:
        self.plan: RoundPlan = config.plan(round_, participants)
        self.config = config
        self.dim = dim
        self.transcript = transcript if transcript is not None else Transcript()
        self.tamper = tamper
        self.gone_after = schedule(dropouts, round_, self.plan.participants)
        self.gone: set[ClientId] = set()  # silent from now on
        self.cpu: dict[ClientId, float] = {}  # CPU seconds per participant and for SERVER
        self.server = Collector(self.plan, config.fixed, dim)
        self.people = {
            cid: Participant(cid, self.plan, config, self._randomness(cid))
            for cid in self.plan.participants
        }
        self.outcome: Outcome | None = None

    def _randomness(self, cid: ClientId) -> Randomness:
        if self.config.seed is None:
            return SystemRandomness()
        return SeededRandomness(self.config.seed, self.plan.round, cid)

    def _timed(self, who: ClientId, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, its CPU time charged to ``who`` (a participant or SERVER)."""
        t0 = time.thread_time()
        try:
            return fn(*args)
        finally:
            self.cpu[who] = self.cpu.get(who, 0.0) + time.thread_time() - t0

    def _post(
        self, stage: Stage, sender: ClientId, recipient: ClientId, kind: str, nbytes: int, x: T
    ) -> T:
        if self.tamper is not None:
            x = self.tamper(stage, sender, recipient, x)  # type: ignore[assignment]
        self.transcript.record(self.plan.round, stage, sender, recipient, kind, nbytes, x)
        return x

    def _drop_after(self, stage: Stage) -> None:
        self.gone |= {cid for cid, s in self.gone_after.items() if s == stage}

    def _alive(self) -> list[ClientId]:
        return [c for c in self.plan.participants if c not in self.gone]

    def _refused(self, cid: ClientId, exc: Refused) -> None:
        log.warning("round %d: participant %s stops: %s", self.plan.round, cid, exc)
        self.gone.add(cid)

    # --- stages 1-3 ---------------------------------------------------------------------
    def setup(self) -> None:
        srv, r = self.server, self.plan.round
        for cid in self._alive():
            pk = self._timed(cid, self.people[cid].advertise)
            pk = self._post(Stage.ADVERTISE, cid, SERVER, "public_keys", PublicKeys.NBYTES, pk)
            self._timed(SERVER, srv.take_keys, cid, pk)
        self._drop_after(Stage.ADVERTISE)
        self._timed(SERVER, srv.close_advertise)
        for cid in self._alive():
            peers = self._timed(SERVER, srv.keys_for, cid)
            size = len(peers) * (ID_BYTES + PublicKeys.NBYTES)
            peers = self._post(Stage.SHARE, SERVER, cid, "neighbour_keys", size, peers)
            try:
                cts = self._timed(cid, self.people[cid].share_keys, peers)
            except Refused as exc:
                self._refused(cid, exc)
                continue
            size = sum(ID_BYTES + len(ct) for ct in cts.values())
            cts = self._post(Stage.SHARE, cid, SERVER, "ciphertexts", size, cts)
            self._timed(SERVER, srv.take_shares, cid, cts)
        self._drop_after(Stage.SHARE)
        for cid in self._alive():
            inbox = self._timed(SERVER, srv.shares_for, cid)
            size = sum(ID_BYTES + len(ct) for ct in inbox.values())
            inbox = self._post(Stage.CHECK, SERVER, cid, "ciphertexts", size, inbox)
            bad = self._timed(cid, self.people[cid].check_shares, inbox)
            bad = self._post(
                Stage.CHECK, cid, SERVER, "failed_senders", ID_BYTES * (1 + len(bad)), bad
            )
            self._timed(SERVER, srv.take_report, cid, bad)
        self._drop_after(Stage.CHECK)
        self._timed(SERVER, srv.close_sharing)
        for u, why in sorted(srv.excluded.items()):
            log.info("round %d: %s excluded: %s", r, u, why)

    # --- stage 4 ------------------------------------------------------------------------
    def expects(self, cid: ClientId) -> bool:
        """Whether ``cid`` is still in the round and may send a masked input."""
        return cid in self.server.u2 and cid not in self.gone

    def submit(self, cid: ClientId, x: np.ndarray, weight: float) -> str | None:
        """``cid`` masks ``x`` (float64, (d,)) weighted by ``weight`` and sends it; returns
        why the server did not take it, or None."""
        if cid not in self.people:
            return "not sampled for this round's secure aggregation"
        if cid in self.gone:
            return "dropped out of the secure aggregation round before sending its input"
        if cid not in self.server.u2:
            return self.server.excluded.get(cid, "not in the round's key-sharing set")
        if weight > self.config.fixed.max_weight:
            return f"weight {weight} exceeds max_weight {self.config.fixed.max_weight}"
        srv, me = self.server, self.people[cid]
        active = self._timed(SERVER, srv.active_for, cid)
        active = self._post(
            Stage.MASKED_INPUT, SERVER, cid, "active_neighbours", ID_BYTES * len(active), active
        )
        try:
            y = self._timed(cid, me.masked_input, x, weight, active)
        except Refused as exc:
            self._refused(cid, exc)
            return str(exc)
        nbytes = self.dim * self.config.fixed.dtype.itemsize + 8
        y = self._post(Stage.MASKED_INPUT, cid, SERVER, "masked_input", nbytes, y)
        return self._timed(SERVER, srv.take_masked, cid, y, weight)

    def add(self, cid: ClientId, update: Params, weight: float, layout: Layout) -> str | None:
        """The aggregator's entry: ``cid`` turns ``update`` into the round's vector and
        submits it (``submit``); returns why it was not taken, or None."""
        try:
            x = layout.vector(update)  # participant side: what it will mask
        except ValueError as exc:
            return f"update does not fit the round's layout: {exc}"
        return self.submit(cid, x, weight)

    # --- stage 5 ------------------------------------------------------------------------
    def add_masked(self, cid: ClientId, words: Tensor, weight: float) -> str | None:
        """Simulated participants mask in ``add``; masked words come only over a channel."""
        return "this round's participants are simulated: they mask in add, not on a carrier"

    def finish(self) -> Outcome:
        """Unmask the sum of what was submitted; raises ``RoundAborted`` with the reason."""
        srv = self.server
        self._drop_after(Stage.MASKED_INPUT)
        self._timed(SERVER, srv.close_inputs)
        for cid in self._alive():
            if cid not in srv.weights:
                continue
            alive, dropped = self._timed(SERVER, srv.unmask_request, cid)
            size = ID_BYTES * (len(alive) + len(dropped))
            alive, dropped = self._post(
                Stage.UNMASK, SERVER, cid, "unmask_request", size, (alive, dropped)
            )
            try:
                ans = self._timed(cid, self.people[cid].unmask, alive, dropped)
            except Refused as exc:
                self._refused(cid, exc)
                continue
            ans = self._post(Stage.UNMASK, cid, SERVER, "shares", ans.nbytes, ans)
            if isinstance(ans, UnmaskShares):
                self._timed(SERVER, srv.take_answer, cid, ans)
        self._drop_after(Stage.UNMASK)
        self.outcome = self._timed(SERVER, srv.finish)
        return self.outcome


def run_round(
    round_: int,
    inputs: dict[ClientId, tuple[np.ndarray, float]],
    config: SecAggConfig,
    *,
    participants: Sequence[ClientId] | None = None,
    dropouts: Sequence[DropoutPlan] = (),
    tamper: Tamper | None = None,
    transcript: Transcript | None = None,
) -> SimulatedRound:
    """Run a whole round: ``inputs`` maps each participant that trains to (update, weight);
    ``participants`` (default: the keys of ``inputs``) are those in the setup."""
    ids = list(participants) if participants is not None else list(inputs)
    dim = len(next(iter(inputs.values()))[0]) if inputs else 0
    sim = SimulatedRound(
        round_, ids, config, dim, dropouts=dropouts, tamper=tamper, transcript=transcript
    )
    sim.setup()
    for cid in sim.plan.participants:
        if cid in inputs and sim.expects(cid):
            x, w = inputs[cid]
            sim.submit(cid, x, w)
    sim.finish()
    return sim


__all__ = ["RoundAborted", "SimulatedRound", "run_round"]
