"""The participant stack: everything one participant does in a round, in one object.

    params ──▶ algorithm.local (Client.fit, e.g. SCAFFOLD-corrected) ──▶ check ──▶
        uplink encode (clip, local DP, compression, error feedback) ──▶ wire tensors

Every backend runs the stack in the participant's place: ``Sequential`` in the server's
process, ``Processes`` and ``RayBackend`` in their workers, ``Vectorized`` in its batched
program (when the stack does nothing after ``fit``) or participant by participant, and the
gRPC carrier in the participant's own process (``fedforge.transport.participant``). The
server only decodes and aggregates; it never runs a participant's encode.

What leaves the stack is a ``FitResult`` whose ``update`` is the *wire form*: the update
itself when the uplink has no transforms, else one uint8 tensor ``UPLOAD`` holding the
pipeline's bytes (what the history counts). ``Plan`` is the part of the stack that the
federation decides (the algorithm's participant hook and the uplink); it is the same object on every participant of a
simulation and, over gRPC, is described to each participant process (``describe``).

The stack's state (error feedback's residual, a local-DP secret, SCAFFOLD's control
variate under ``@scaffold``) is the participant's own:
``state`` here, saved with a simulation's checkpoints, and over gRPC in the participant
process (and its state file, if it has one). Backends that run the stack in another
process carry the state there and back with each job.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from fedforge.algorithms import Algorithm, Plain, split
from fedforge.client.types import Client, EvalResult, FitResult, RoundInfo
from fedforge.params import ClientId, Params
from fedforge.transforms import Context, Pipeline

UPLOAD = "uplink.payload"  # the name of an encoded update's only tensor

State = dict[str, dict[str, Tensor]]  # transform name -> that transform's tensors
_SEP = "\x1f"


class UpdateRefused(ValueError):
    """The participant's own update fails the server's checks; it is not encoded or sent."""


def as_tensor(payload: bytes) -> Tensor:
    """Bytes as a 1-D uint8 tensor (the wire form of an encoded update)."""
    if not payload:
        return torch.empty(0, dtype=torch.uint8)
    return torch.frombuffer(bytearray(payload), dtype=torch.uint8)


def payload_of(update: Params) -> bytes:
    """The pipeline bytes an encoded update carries (raises ``ValueError`` if it is not one)."""
    t = update.get(UPLOAD)
    if len(update) != 1 or t is None or t.dtype != torch.uint8 or t.dim() != 1:
        names = sorted(update)[:4]
        raise ValueError(f"an encoded update is one 1-D uint8 tensor {UPLOAD!r}, got {names}")
    return t.numpy().tobytes()


@dataclass(frozen=True)
class Plan:
    """What the federation decides for every participant's stack: the algorithm's
    participant hook and the uplink pipeline."""

    uplink: Pipeline = field(default_factory=Pipeline)
    algorithm: Algorithm = field(default_factory=Plain)

    @property
    def identity(self) -> bool:
        """True when the stack sends ``fit``'s update as it is (nothing to run around it)."""
        return not self.uplink.transforms and self.algorithm.kind == Plain.kind

    def template(self, params: Params) -> Params | None:
        """The layout of an upload: the model's tensors and the algorithm's extras (None:
        each participant's own, checked by the algorithm)."""
        return self.algorithm.layout(params)


def context(info: RoundInfo, cid: ClientId) -> Context:
    """The uplink's context for one task: the seeds come with the task from the server."""
    return Context(info.round, cid, info.uplink_seed, round_seed=info.round_seed)


class Stack:
    """One participant: its ``Client``, the federation's ``Plan`` and its own state."""

    def __init__(self, cid: ClientId, client: Client, plan: Plan) -> None:
        self.cid = cid
        self.client = client
        self.plan = plan
        self.state: State = {}

    def fit(self, params: Params, info: RoundInfo) -> FitResult:
        if self.plan.identity:
            return self.client.fit(params, info)
        alg = self.plan.algorithm
        own, received = split(params, alg.kind)
        res = alg.local(self.client, own, received, info, self.state.setdefault(f"@{alg.kind}", {}))
        why = alg.check(res, own)
        if why is not None:  # never encode (and never move error feedback) on a bad update
            raise UpdateRefused(f"update refused before encoding: {why}")
        payload = self.plan.uplink.encode(res.update, context(info, self.cid), self.state)
        return FitResult({UPLOAD: as_tensor(payload)}, res.num_examples, res.metrics)

    def evaluate(self, params: Params, info: RoundInfo) -> EvalResult:
        return self.client.evaluate(params, info)

    # --- the state, flat (``transform<SEP>name -> tensor``) for safetensors -----------------

    def state_tensors(self) -> dict[str, Tensor]:
        return {
            f"{t}{_SEP}{k}": v.contiguous() for t, per in self.state.items() for k, v in per.items()
        }

    def load_state_tensors(self, flat: Mapping[str, Tensor]) -> None:
        state: State = {}
        for key, v in flat.items():
            t, _, k = key.partition(_SEP)
            state.setdefault(t, {})[k] = v.clone()
        self.state = state


class Participants(Mapping[ClientId, Stack]):
    """The stacks of a federation's participants, built on first use from ``clients`` (a
    live mapping: over gRPC the registry of whoever is connected) and one ``plan``."""

    def __init__(self, clients: Mapping[ClientId, Client], plan: Plan) -> None:
        self.clients = clients
        self.plan = plan
        self._stacks: dict[ClientId, Stack] = {}
        self._pending: dict[ClientId, dict[str, Tensor]] = {}

    def __getitem__(self, cid: ClientId) -> Stack:
        stack = self._stacks.get(cid)
        if stack is None:
            stack = Stack(cid, self.clients[cid], self.plan)
            if cid in self._pending:
                stack.load_state_tensors(self._pending.pop(cid))
            self._stacks[cid] = stack
        return stack

    def __iter__(self) -> Iterator[ClientId]:
        return iter(self.clients)

    def __len__(self) -> int:
        return len(self.clients)

    def state_tensors(self) -> dict[str, Tensor]:
        """Every built stack's state (and state restored but not yet used), flat."""
        out = {f"{c}{_SEP}{k}": v for c, flat in self._pending.items() for k, v in flat.items()}
        for cid, stack in self._stacks.items():
            out.update({f"{cid}{_SEP}{k}": v for k, v in stack.state_tensors().items()})
        return out

    def load_state_tensors(self, flat: Mapping[str, Tensor]) -> None:
        per: dict[ClientId, dict[str, Tensor]] = {}
        for key, v in flat.items():
            cid, _, rest = key.partition(_SEP)
            per.setdefault(cid, {})[rest] = v
        self._stacks, self._pending = {}, per
