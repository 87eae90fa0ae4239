"""The gRPC backend: participants are separate processes (or machines) that connected to
this server; the same ``Server``, aggregators and pipeline run as in simulation, only the
carrier changes.

Each round every sampled participant gets its task at once; results are yielded in job
order (the same summation order as every other backend). A participant that does not
answer by the round deadline, that disconnects, or whose result is refused becomes a
``ClientFailure`` with the reason, and the round goes on with the others. Each round's
log line says who was asked, who answered, the bytes each way and the time.

With secure aggregation (``registry.secagg``, a ``fedforge.transport.secagg.GrpcSecAgg``)
a fit task asks for the participant's masked input, and only those in the round's setup
get one; the others fail with the reason, and no participant is ever asked for its
update in the clear. Each answer reaches the server as a ``MaskedUpload``, which only the
secure aggregator can add into the round's sum (see ``fedforge.transport.secagg``).

Each participant runs its whole stack (``fedforge.participant``) in its own process: the
stack's plan (the uplink pipeline: clipping, local DP, compression, error feedback) is
described on every fit task (``fedforge.transport.uplink``) with the task's seeds in its
``RoundInfo``, the participant pushes what its stack encoded and the server only decodes,
so the bytes the history counts are the bytes on the socket. A plan that cannot be
described to a participant is refused when the backend starts, before round 1.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from fedforge.client.types import (
    Client,
    ClientFailure,
    EvalResult,
    FitResult,
    MaskedUpload,
    RoundInfo,
    Scalar,
)
from fedforge.params import ClientId, Params
from fedforge.participant import Participants, Plan
from fedforge.server.backend import Job
from fedforge.transport import uplink as up
from fedforge.transport.chunks import Payload
from fedforge.transport.proto import fedforge_pb2 as pb
from fedforge.transport.registry import Kind, Registry, Task

log = logging.getLogger(__name__)


@dataclass
class RoundTraffic:
    """What one fit or evaluate call moved, for the log and ``fedforge status``."""

    round: int
    kind: str
    asked: list[ClientId] = field(default_factory=list)
    answered: list[ClientId] = field(default_factory=list)
    failed: dict[ClientId, str] = field(default_factory=dict)
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0


class GrpcBackend:
    name = "grpc"

    def __init__(
        self,
        registry: Registry,
        round_timeout: float = 600.0,
        options: Mapping[str, Scalar] | None = None,
    ) -> None:
        if round_timeout <= 0:
            raise ValueError(f"round_timeout must be > 0, got {round_timeout}")
        self.registry = registry
        self.round_timeout = round_timeout
        # sent with every task: a site federation's description (``fedforge.site``)
        self.options: dict[str, Scalar] = dict(options or {})
        self.traffic: list[RoundTraffic] = []
        self._uplink: str | None = None  # the plan's spec fit tasks carry (None: raw updates)

    def _uplink_for(self, info: RoundInfo) -> pb.Uplink | None:
        if self._uplink is None:
            return None
        return pb.Uplink(pipeline=self._uplink, seed=info.uplink_seed, round_seed=info.round_seed)

    def start(self, clients: Mapping[ClientId, Client]) -> None:
        """Runs the stacks of its own registry's participants (``Server.run`` passes them as
        ``Participants``); their plan must be describable to the participant processes."""
        plan = clients.plan if isinstance(clients, Participants) else Plan()
        members = clients.clients if isinstance(clients, Participants) else clients
        if members is not self.registry:
            raise TypeError("GrpcBackend runs the participants of its own Registry")
        try:
            self._uplink = None if plan.identity else up.describe(plan)
        except up.SpecError as exc:
            raise ValueError(
                f"this federation's participant plan cannot run on gRPC participants: {exc}; "
                "every stage of a participant's stack runs in its own process, so use "
                f"transforms from {up.kinds()} and algorithms from {up.algorithms()}"
            ) from None

    def _run(
        self, kind: Kind, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, object]]:
        t0 = time.perf_counter()
        rnd = jobs[0][1].round if jobs else 0
        traffic = RoundTraffic(rnd, kind, asked=[cid for cid, _ in jobs])
        payload = Payload(params)
        _ = payload.digest  # hash once, before the first participant needs it
        secure = self.registry.secagg if kind == "fit" else None
        remote = secure.round_for(rnd) if secure is not None else None
        entries: list[Task | tuple[ClientId, ClientFailure]] = []
        for cid, info in jobs:
            if self.options:
                info = dataclasses.replace(info, options={**info.options, **self.options})
            if secure is None:
                uplink = self._uplink_for(info) if kind == "fit" else None
                entries.append(self.registry.submit(cid, kind, info, payload, uplink=uplink))
                continue
            # securely aggregated: ask for the masked input, never for the update itself
            req, why = remote.fit_request(cid) if remote is not None else (None, None)
            if req is None or remote is None:
                why = why or "the round's secure aggregation was not set up"
                entries.append((cid, ClientFailure(f"secure aggregation: {why}")))
                continue
            entries.append(
                self.registry.submit(cid, kind, info, payload, template=remote.template, secagg=req)
            )
        tasks = [e for e in entries if isinstance(e, Task)]
        deadline = time.monotonic() + self.round_timeout
        try:
            for entry in entries:
                if not isinstance(entry, Task):
                    traffic.failed[entry[0]] = entry[1].reason
                    yield entry
                    continue
                task = entry
                if not task.wait(max(0.0, deadline - time.monotonic())):
                    self.registry.resolve(
                        task,
                        ClientFailure(
                            f"no answer within the round deadline ({self.round_timeout:g} s)"
                        ),
                    )
                out: object = task.outcome
                if remote is not None and isinstance(out, FitResult):
                    up_ = remote.upload(out)
                    out = (
                        up_
                        if isinstance(up_, MaskedUpload)
                        else ClientFailure(f"secure aggregation: {up_}")
                    )
                traffic.bytes_down += task.sent_bytes
                traffic.bytes_up += task.received_bytes
                if isinstance(out, ClientFailure):
                    traffic.failed[task.client] = out.reason
                else:
                    traffic.answered.append(task.client)
                yield task.client, out
        finally:
            for task in tasks:  # stragglers' streams stop at their next chunk
                self.registry.resolve(task, ClientFailure("round ended"))
            self.registry.forget(tasks)
            _wait_senders(tasks)
            traffic.seconds = time.perf_counter() - t0
            self.traffic.append(traffic)
            log.info(
                "round %d %s: asked %d %s, answered %d, failed %d %s, bytes down %d, up %d, %.2f s",
                traffic.round,
                kind,
                len(traffic.asked),
                traffic.asked,
                len(traffic.answered),
                len(traffic.failed),
                traffic.failed,
                traffic.bytes_down,
                traffic.bytes_up,
                traffic.seconds,
            )

    def fit(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, FitResult | ClientFailure]]:
        return self._run("fit", jobs, params)  # type: ignore[return-value]

    def evaluate(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, EvalResult | ClientFailure]]:
        return self._run("evaluate", jobs, params)  # type: ignore[return-value]

    def prepare(
        self, ids: Sequence[ClientId], seed: int
    ) -> dict[ClientId, EvalResult | ClientFailure]:
        """Ask each site for its preprocessing statistics (``SiteClient.prepare``), before
        round 1; the answers carry them as metrics, or the site's reason to refuse."""
        jobs = [(cid, RoundInfo(0, seed)) for cid in ids]
        return dict(self._run("prepare", jobs, {}))  # type: ignore[arg-type]

    def close(self) -> None:
        """Training is over (or stopped): participants are told and disconnect."""
        self.registry.finish("training finished")


def _wait_senders(tasks: Sequence[object], timeout: float = 5.0) -> None:
    """Give streams still sending this round's parameters a moment to notice the end, so
    the server optimizer never updates tensors that are being read."""
    deadline = time.monotonic() + timeout
    while any(getattr(t, "sending", 0) for t in tasks) and time.monotonic() < deadline:
        time.sleep(0.01)
