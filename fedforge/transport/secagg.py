"""Secure aggregation (SecAgg+) over gRPC: every participant masks in its own process.

The same ``SecureAggregator``, ``Participant`` and ``Collector`` as in simulation
(``fedforge.secagg``); only the carrier changes. ``GrpcSecAgg(registry)`` is the
aggregator's channel: each round it opens a ``RemoteRound``, which sends the stages to
the participants as tasks on their ordinary task channels and feeds their answers to the
server's ``Collector``. The participant side (``SecAggSide``, run by ``connect``) holds
the round's ``Participant``: its key pairs, its self-mask seed and the shares it received
never leave its process, and neither does its update.

One round ``r`` (every message goes through the server, participants have no links):

    stage           server -> participant                 participant -> server
    advertise_keys  "secagg" task: SecAggSetup            two public keys + seed commitment
    share_keys      "secagg" task: neighbours' keys       sealed shares, one per neighbour
    check_shares    "secagg" task: shares sealed for it   senders whose shares did not open
    masked_input    the "fit" task + active neighbours    the masked words, not the update
    unmask          "secagg" task: survivors, dropped     shares of survivors' seeds and of
                                                          dropped neighbours' mask keys

``SecAggSetup`` carries the round's public parameters (participants, graph choice,
threshold, fixed point, clipping, noise, compression); each participant rebuilds the
neighbour graph and threshold from them with ``SecAggConfig.plan``, which refuses an
unsafe threshold, so a server cannot talk a participant into one. A participant that
took part in a round's setup refuses a ``fit`` task of that round that does not ask for
a masked input, and while a channel is attached ``GrpcBackend`` never asks anyone for an
update in the clear. A participant that fails a stage, times out or disconnects is a
dropout from then on, exactly as ``DropoutPlan`` simulates it; the server reconstructs
what it needs from the others' shares, or aborts the round below the threshold.

The masked input is a fit result whose only tensor is ``"secagg.masked"`` (the words,
int64/int32 on the wire). ``GrpcBackend`` hands the server a ``MaskedUpload`` of those
words; the server gives it to the secure aggregator's accumulator (``add_masked``), which
adds the words into the round's sum (``RemoteRound.add_masked``); nothing else of the
server ever reads them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from fedforge.client.types import ClientFailure, FitResult, MaskedUpload, RoundInfo
from fedforge.client.validation import check_update
from fedforge.params import ClientId, Params
from fedforge.secagg import shamir
from fedforge.secagg.collector import Collector, Outcome
from fedforge.secagg.config import SecAggConfig
from fedforge.secagg.fixedpoint import FixedPoint
from fedforge.secagg.graph import Auto, Complete, GraphChoice, Sparse
from fedforge.secagg.layout import Layout
from fedforge.secagg.messages import SERVER, Stage, Transcript
from fedforge.secagg.participant import Participant, PublicKeys, UnmaskShares
from fedforge.secagg.participant import Refused as SecAggRefused
from fedforge.secagg.prg import Randomness, SystemRandomness
from fedforge.transforms.randomk import RandomK
from fedforge.transport import codec
from fedforge.transport.chunks import Payload
from fedforge.transport.proto import fedforge_pb2 as pb
from fedforge.transport.registry import Registry, SecAggAnswer, Task

if TYPE_CHECKING:
    from fedforge.plugins import ServerView
    from fedforge.secagg.aggregator import SecureAggregator

log = logging.getLogger(__name__)

MASKED = "secagg.masked"  # the one tensor of a masked-input answer
_NOTHING = Payload({})  # secagg tasks carry no tensors
T = TypeVar("T")


# --- the round's public parameters on the wire ------------------------------------------


def setup_message(
    config: SecAggConfig, participants: Sequence[ClientId], layout: Layout, weighted: bool
) -> pb.SecAggSetup:
    """What every participant needs to rebuild the round's plan and masked vector."""
    fx = config.fixed
    m = pb.SecAggSetup(
        participants=sorted(participants),
        threshold=config.threshold or 0,
        bits=fx.bits,
        clip=fx.clip,
        max_weight=fx.max_weight,
        clip_norm=config.clip_norm or 0.0,
        noise_std=config.noise_std,
        graph_seed=config.graph_seed,
        weighted=weighted,
    )
    g = config.graph
    sparse = g.sparse if isinstance(g, Auto) else g
    if isinstance(g, Complete):
        m.graph = "complete"
    else:
        assert isinstance(sparse, Sparse)
        m.graph = "auto" if isinstance(g, Auto) else "sparse"
        m.neighbours = sparse.neighbours or 0
        m.expected_dropout = sparse.expected_dropout
        m.failure = sparse.failure
        if isinstance(g, Auto):
            m.complete_up_to = g.complete_up_to
    comp = layout.compression
    if comp is not None:
        assert isinstance(comp, RandomK) and comp.shared  # GrpcSecAgg.check refused the rest
        m.randk_fraction = comp.fraction
        m.randk_unbiased = comp.unbiased
    return m


@dataclass(frozen=True)
class RoundSetup:
    """A participant's reading of ``SecAggSetup`` (``from_message`` validates it)."""

    participants: tuple[ClientId, ...]
    config: SecAggConfig
    compression: RandomK | None
    weighted: bool

    @staticmethod
    def from_message(m: pb.SecAggSetup) -> RoundSetup:
        """``ValueError`` with the reason for anything out of range."""
        graph: GraphChoice
        if m.graph == "complete":
            graph = Complete()
        elif m.graph in ("sparse", "auto"):
            sparse = Sparse(m.neighbours or None, m.expected_dropout, m.failure)
            graph = sparse if m.graph == "sparse" else Auto(m.complete_up_to, sparse)
        else:
            raise ValueError(f"unknown graph {m.graph!r}")
        config = SecAggConfig(
            graph=graph,
            threshold=m.threshold or None,
            fixed=FixedPoint(m.bits, m.clip, m.max_weight),
            clip_norm=m.clip_norm or None,
            noise_std=m.noise_std,
            seed=None,  # a participant's secrets come from its own CSPRNG, never the server
            graph_seed=m.graph_seed,
        )
        comp = (
            RandomK(m.randk_fraction, m.randk_unbiased, shared=True) if m.randk_fraction else None
        )
        return RoundSetup(tuple(m.participants), config, comp, m.weighted)


def _keys(pk: PublicKeys) -> pb.SecAggKeys:
    return pb.SecAggKeys(cipher=pk.cipher, mask=pk.mask, seed_commitment=pk.seed_commitment)


def _public(k: pb.SecAggKeys) -> PublicKeys:
    return PublicKeys(k.cipher, k.mask, k.seed_commitment)


def masked_layout(dim: int, fixed: FixedPoint) -> codec.Layout:
    """The wire layout of a masked input: ``dim`` words as int64 (or int32 for 32 bits)."""
    return codec.Layout((MASKED,), (torch.int64 if fixed.bits == 64 else torch.int32,), ((dim,),))


# --- the server side ----------------------------------------------------------------------


class GrpcSecAgg:
    """The ``SecureAggregator`` channel for participants connected to ``registry``.

    ``SecureAggregator(inner, config, population=registry, channel=GrpcSecAgg(registry))``;
    the registry then refers to it, so that ``GrpcBackend`` asks for masked inputs only.
    ``stage_timeout``: seconds a stage waits for answers; who has not answered by then is a
    dropout for the rest of the round.
    """

    def __init__(self, registry: Registry, stage_timeout: float = 60.0) -> None:
        if stage_timeout <= 0:
            raise ValueError(f"stage_timeout must be > 0, got {stage_timeout}")
        self.registry = registry
        self.stage_timeout = stage_timeout
        self.current: RemoteRound | None = None
        registry.secagg = self

    def check(self, aggregator: SecureAggregator, server: ServerView) -> None:
        if server.pipeline.transforms:
            raise ValueError(
                f"secure aggregation over gRPC: the server's pipeline {server.pipeline.names} "
                "would run on the server, but the server never holds an update; give a "
                "linear compression to SecureAggregator(compression=RandomK(..., shared=True)) "
                "instead, which every participant applies before masking"
            )
        if server.update_bound is not None:
            raise ValueError(
                "secure aggregation over gRPC: the server never holds an update, so it cannot "
                "bound its norm (update_bound); clip on the participant with "
                "SecAggConfig(clip_norm=...)"
            )
        comp = aggregator.compression
        if comp is not None and not (isinstance(comp, RandomK) and comp.shared):
            raise ValueError(
                f"secure aggregation over gRPC carries RandomK(shared=True) compression only, "
                f"got {getattr(comp, 'name', comp)!r}"
            )
        if not 0 <= aggregator.config.graph_seed < 2**64:
            raise ValueError(f"graph_seed must be in [0, 2^64), got {aggregator.config.graph_seed}")

    def open_round(
        self,
        round_: int,
        participants: Sequence[ClientId],
        config: SecAggConfig,
        layout: Layout,
        *,
        weighted: bool,
        transcript: Transcript,
    ) -> RemoteRound:
        self.current = None  # no fit task leaves for the previous round's plan
        self.current = RemoteRound(self, round_, participants, config, layout, weighted, transcript)
        return self.current

    def round_for(self, round_: int) -> RemoteRound | None:
        """The open round if it is ``round_`` (what ``GrpcBackend`` asks before a fit)."""
        cur = self.current
        return cur if cur is not None and cur.plan.round == round_ else None


class RemoteRound:
    """One SecAgg+ round whose participants are remote (the ``RoundDriver`` of
    ``SecureAggregator``): the ``SimulatedRound`` stages, carried as tasks."""

    def __init__(
        self,
        channel: GrpcSecAgg,
        round_: int,
        participants: Sequence[ClientId],
        config: SecAggConfig,
        layout: Layout,
        weighted: bool,
        transcript: Transcript,
    ) -> None:
        self.plan = config.plan(round_, participants)  # ValueError: the round cannot run
        self.config = config
        self.layout = layout
        self.weighted = weighted
        self.registry = channel.registry
        self.timeout = channel.stage_timeout
        self.transcript = transcript
        self.dim = layout.dim
        self.server = Collector(self.plan, config.fixed, self.dim)
        self.template = masked_layout(self.dim, config.fixed)
        self.gone: dict[ClientId, str] = {}  # silent from now on, and why
        self.cpu: dict[ClientId, float] = {}  # server CPU seconds (SERVER)
        self.outcome: Outcome | None = None

    # --- plumbing -----------------------------------------------------------------------
    def _timed(self, fn: Callable[..., T], *args: Any) -> T:
        t0 = time.thread_time()
        try:
            return fn(*args)
        finally:
            self.cpu[SERVER] = self.cpu.get(SERVER, 0.0) + time.thread_time() - t0

    def _record(
        self, stage: Stage, sender: ClientId, recipient: ClientId, kind: str, n: int, x: object
    ) -> None:
        self.transcript.record(self.plan.round, stage, sender, recipient, kind, n, x)

    def _alive(self) -> list[ClientId]:
        return [c for c in self.plan.participants if c not in self.gone]

    def _lose(self, cid: ClientId, why: str) -> None:
        if cid not in self.gone:
            log.warning(
                "round %d: secure aggregation participant %s gone: %s", self.plan.round, cid, why
            )
            self.gone[cid] = why

    def _exchange(
        self, stage: Stage, kind: str, requests: Mapping[ClientId, tuple[pb.SecAggRequest, object]]
    ) -> dict[ClientId, pb.SecAggReply]:
        """Send each request as a task at once, wait for the answers up to the stage
        timeout; who fails, times out or disconnects is gone."""
        tasks: dict[ClientId, Task] = {}
        for cid, (req, shown) in requests.items():
            self._record(stage, SERVER, cid, kind, req.ByteSize(), shown)
            info = RoundInfo(self.plan.round, 0)
            tasks[cid] = self.registry.submit(cid, "secagg", info, _NOTHING, secagg=req)
        deadline = time.monotonic() + self.timeout
        out: dict[ClientId, pb.SecAggReply] = {}
        try:
            for cid, task in tasks.items():
                if not task.wait(max(0.0, deadline - time.monotonic())):
                    self.registry.resolve(
                        task, ClientFailure(f"no answer within {self.timeout:g} s")
                    )
                res = task.outcome
                if isinstance(res, SecAggAnswer):
                    out[cid] = res.reply
                else:
                    why = res.reason if isinstance(res, ClientFailure) else "unexpected answer"
                    self._lose(cid, f"{stage.value}: {why}")
        finally:
            for task in tasks.values():
                self.registry.resolve(task, ClientFailure("stage ended"))
            self.registry.forget(list(tasks.values()))
        return out

    def _request(self, stage: Stage, **fields: Any) -> pb.SecAggRequest:
        return pb.SecAggRequest(stage=stage.value, **fields)

    # --- stages 1-3 ---------------------------------------------------------------------
    def setup(self) -> None:
        srv = self.server
        setup = setup_message(self.config, self.plan.participants, self.layout, self.weighted)
        reqs: dict[ClientId, tuple[pb.SecAggRequest, object]] = {
            c: (self._request(Stage.ADVERTISE, setup=setup), None) for c in self._alive()
        }
        for cid, rep in self._exchange(Stage.ADVERTISE, "round_setup", reqs).items():
            pk = _public(rep.keys)
            self._record(Stage.ADVERTISE, cid, SERVER, "public_keys", rep.ByteSize(), pk)
            self._timed(srv.take_keys, cid, pk)
        self._timed(srv.close_advertise)

        reqs = {}
        for cid in self._alive():
            peers = self._timed(srv.keys_for, cid)
            keys = {v: _keys(pk) for v, pk in peers.items()}
            reqs[cid] = (self._request(Stage.SHARE, keys=keys), peers)
        for cid, rep in self._exchange(Stage.SHARE, "neighbour_keys", reqs).items():
            cts = dict(rep.ciphertexts)
            self._record(Stage.SHARE, cid, SERVER, "ciphertexts", rep.ByteSize(), cts)
            self._timed(srv.take_shares, cid, cts)

        reqs = {}
        for cid in self._alive():
            inbox = self._timed(srv.shares_for, cid)
            reqs[cid] = (self._request(Stage.CHECK, ciphertexts=inbox), inbox)
        for cid, rep in self._exchange(Stage.CHECK, "ciphertexts", reqs).items():
            bad = list(rep.failed)
            self._record(Stage.CHECK, cid, SERVER, "failed_senders", rep.ByteSize(), bad)
            self._timed(srv.take_report, cid, bad)
        self._timed(srv.close_sharing)
        for u, why in sorted(srv.excluded.items()):
            log.info("round %d: %s excluded: %s", self.plan.round, u, why)

    # --- stage 4: rides on the fit task -------------------------------------------------
    def fit_request(self, cid: ClientId) -> tuple[pb.SecAggRequest | None, str | None]:
        """What ``cid``'s fit task asks for (its masked input), or why it gets none."""
        srv = self.server
        if cid not in self.plan.graph:
            return None, "not sampled for this round's secure aggregation"
        if cid in self.gone:
            return None, f"dropped out of the secure aggregation round ({self.gone[cid]})"
        if cid not in srv.u2:
            return None, srv.excluded.get(cid, "not in the round's key-sharing set")
        active = srv.active_for(cid)
        req = self._request(Stage.MASKED_INPUT, active=sorted(active))
        self._record(Stage.MASKED_INPUT, SERVER, cid, "active_neighbours", req.ByteSize(), active)
        return req, None

    def upload(self, result: FitResult) -> MaskedUpload | str:
        """``cid``'s fit answer as the masked upload it must be, or why it is not one."""
        t = result.update.get(MASKED)
        if len(result.update) != 1 or t is None or tuple(t.shape) != (self.dim,):
            return f"masked input is not {self.dim} words"
        return MaskedUpload(t, result.num_examples, result.metrics)

    def add(self, cid: ClientId, update: Params, weight: float, layout: Layout) -> str | None:
        """An update in the clear is never taken in a securely aggregated round."""
        return "a securely aggregated round takes masked inputs only, never an update"

    def add_masked(self, cid: ClientId, words: torch.Tensor, weight: float) -> str | None:
        """Take ``cid``'s masked words into the sum; returns why not, or None."""
        if tuple(words.shape) != (self.dim,):
            return f"masked input is not {self.dim} words"
        if weight > self.config.fixed.max_weight:
            return f"weight {weight} exceeds max_weight {self.config.fixed.max_weight}"
        y = words.numpy().view(self.config.fixed.dtype)  # the receiver's own fresh buffer
        self._record(Stage.MASKED_INPUT, cid, SERVER, "masked_input", y.nbytes + 8, y)
        return self._timed(self.server.take_masked, cid, y, weight)

    # --- stage 5 ------------------------------------------------------------------------
    def finish(self) -> Outcome:
        srv = self.server
        self._timed(srv.close_inputs)
        reqs: dict[ClientId, tuple[pb.SecAggRequest, object]] = {}
        for cid in self._alive():
            if cid not in srv.weights:
                continue
            alive, dropped = self._timed(srv.unmask_request, cid)
            req = self._request(Stage.UNMASK, survivors=sorted(alive), dropped=sorted(dropped))
            reqs[cid] = (req, (alive, dropped))
        for cid, rep in self._exchange(Stage.UNMASK, "unmask_request", reqs).items():
            try:
                ans = UnmaskShares(
                    {v: shamir.from_bytes(b) for v, b in rep.seed_shares.items()},
                    {v: shamir.from_bytes(b) for v, b in rep.key_shares.items()},
                )
            except ValueError as exc:
                self._lose(cid, f"unmask: malformed shares: {exc}")
                continue
            self._record(Stage.UNMASK, cid, SERVER, "shares", rep.ByteSize(), ans)
            self._timed(srv.take_answer, cid, ans)
        self.outcome = self._timed(srv.finish)
        return self.outcome


# --- the participant side -----------------------------------------------------------------


@dataclass
class _Mine:
    setup: RoundSetup
    me: Participant


class SecAggSide:
    """One participant's secure aggregation state across the stages of its rounds.

    ``handle`` answers a ``secagg`` task; ``mask`` turns a fit result into the masked words.
    Both raise ``Refused`` (``fedforge.secagg``) or ``ValueError`` with the reason; the
    participant then answers with that error and the server counts it as a dropout.
    """

    KEEP_ROUNDS = 2  # states of older rounds are dropped

    def __init__(
        self, client_id: ClientId, randomness: Callable[[], Randomness] = SystemRandomness
    ) -> None:
        self.client_id = client_id
        self.randomness = randomness
        self.rounds: dict[int, _Mine] = {}

    def secure(self, round_: int) -> bool:
        """Whether this participant took part in ``round_``'s secure aggregation setup."""
        return round_ in self.rounds

    def _mine(self, round_: int) -> _Mine:
        mine = self.rounds.get(round_)
        if mine is None:
            raise SecAggRefused(f"no secure aggregation setup for round {round_}")
        return mine

    def handle(self, round_: int, req: pb.SecAggRequest) -> pb.SecAggReply:
        stage = req.stage
        if stage == Stage.ADVERTISE.value:
            setup = RoundSetup.from_message(req.setup)
            if self.client_id not in setup.participants:
                raise SecAggRefused(f"{self.client_id} is not among the round's participants")
            plan = setup.config.plan(round_, setup.participants)  # refuses an unsafe threshold
            me = Participant(self.client_id, plan, setup.config, self.randomness())
            self.rounds[round_] = _Mine(setup, me)
            for r in sorted(self.rounds)[: -self.KEEP_ROUNDS]:
                del self.rounds[r]
            return pb.SecAggReply(keys=_keys(me.advertise()))
        mine = self._mine(round_)
        if stage == Stage.SHARE.value:
            peers = {v: _public(k) for v, k in req.keys.items()}
            return pb.SecAggReply(ciphertexts=mine.me.share_keys(peers))
        if stage == Stage.CHECK.value:
            return pb.SecAggReply(failed=mine.me.check_shares(dict(req.ciphertexts)))
        if stage == Stage.UNMASK.value:
            ans = mine.me.unmask(list(req.survivors), list(req.dropped))
            return pb.SecAggReply(
                seed_shares={v: shamir.to_bytes(x) for v, x in ans.seeds.items()},
                key_shares={v: shamir.to_bytes(x) for v, x in ans.mask_keys.items()},
            )
        raise ValueError(f"unknown secure aggregation stage {stage!r}")

    def mask(
        self, round_: int, params: Params, result: FitResult, req: pb.SecAggRequest
    ) -> FitResult:
        """The answer to a masked-input fit task: ``result`` with its update replaced by the
        masked words (the update itself stays here)."""
        mine = self._mine(round_)
        if req.stage != Stage.MASKED_INPUT.value:
            raise ValueError(f"a fit task asks for stage {req.stage!r}, not masked_input")
        why = check_update(result, params)  # what the server would refuse, refused here
        if why is not None:
            raise SecAggRefused(f"update not sent: {why}")
        layout = Layout.of(params, mine.setup.compression, round_, mine.setup.config.graph_seed)
        x = layout.vector(result.update)
        weight = float(result.num_examples) if mine.setup.weighted else 1.0
        fixed = mine.setup.config.fixed
        if weight > fixed.max_weight:
            raise SecAggRefused(f"weight {weight} exceeds max_weight {fixed.max_weight}")
        y = mine.me.masked_input(x, weight, list(req.active))
        words = torch.from_numpy(y.view(np.int64 if fixed.bits == 64 else np.int32))
        return FitResult({MASKED: words}, result.num_examples, result.metrics)


__all__ = [
    "MASKED",
    "GrpcSecAgg",
    "RemoteRound",
    "RoundSetup",
    "SecAggSide",
    "masked_layout",
    "setup_message",
]
