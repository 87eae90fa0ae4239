"""Downlink compression: what the server sends each participant, as a delta where smaller.

The server publishes one chain of *reference* models, the models the
participants hold: ``ref[v] = ref[v-1] + D(E(params[v] - ref[v-1]))`` where
``E``/``D`` is a (lossy) ``Pipeline`` run once per version with a seed of
that version. Every participant holding ``ref[v-1]`` applies the same
payload and gets ``ref[v]`` bit for bit, so the server never needs a model
copy per participant. Because each delta is taken against the reference,
not the previous ``params``, what one payload drops is sent with the next:
server-side error feedback for free, as in DoubleSqueeze (Tang et al.,
"DoubleSqueeze: Parallel Stochastic Gradient with Double-pass
Error-Compensated Compression", ICML 2019); do not wrap the downlink
pipeline in ``ErrorFeedback``. Compressing the server-to-client model is
also studied by Caldas et al., "Expanding the Reach of Federated Learning
by Reducing Client Resource Requirements" (2018).

A participant that last received ``ref[u]`` is sent the payloads of
versions ``u+1 .. v`` if the server still keeps them (the last ``keep``)
and they are together smaller than the full reference; otherwise the full
``ref[v]``, encoded by the lossless ``full`` pipeline (plain float32 by
default). ``Message.nbytes`` is what the downlink carries.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from fedforge.params import ClientId, Params, clone
from fedforge.seeding import derive_seed
from fedforge.transforms.base import Context
from fedforge.transforms.pipeline import Pipeline

_ME: ClientId = "\x00broadcast"
_SEP = "\x1f"


@dataclass(frozen=True)
class Message:
    """The bytes for one participant: ``full`` (replace the model) and/or ``deltas`` to add."""

    version: int
    full: bytes | None
    deltas: tuple[tuple[int, bytes], ...]  # (version, payload) in the order to apply them

    @property
    def nbytes(self) -> int:
        return (len(self.full) if self.full is not None else 0) + sum(
            len(p) for _, p in self.deltas
        )


def _ctx(seed: int, version: int) -> Context:
    return Context(version, _ME, derive_seed(seed, "broadcast", version))


def _apply(held: Params, delta: Params) -> Params:
    """``held + delta``, the same float operations on the server and at every participant."""
    return {k: held[k] + delta[k].to(held[k].dtype) for k in held}


class Broadcast:
    """Server side: the reference chain, each participant's version, and the last payloads."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        full: Pipeline | None = None,
        keep: int = 8,
        seed: int = 0,
    ) -> None:
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        self.pipeline = pipeline
        self.full = full or Pipeline()
        self.keep = keep
        self.seed = seed
        self.version = -1  # nothing published yet
        self.reference: Params = {}
        self._held: dict[ClientId, int] = {}
        self._deltas: OrderedDict[int, bytes] = OrderedDict()
        self._full_payload: tuple[int, bytes] | None = None

    def publish(self, params: Params, version: int) -> Params:
        """Make ``params`` (the global model after ``version`` rounds) the next version; return
        the reference the participants will hold. Publishing the current version again (after
        a resume) changes nothing."""
        if version == self.version:
            return self.reference
        if version < self.version:
            raise ValueError(f"version {version} is older than the published {self.version}")
        if self.version < 0:
            self.reference = clone(params)
        else:
            ctx = _ctx(self.seed, version)
            delta = {k: params[k] - self.reference[k] for k in self.reference}
            payload = self.pipeline.encode(delta, ctx)
            self.reference = _apply(self.reference, self.pipeline.decode(payload, ctx, delta))
            if version != self.version + 1:  # a gap breaks every chain
                self._deltas.clear()
            self._deltas[version] = payload
            while len(self._deltas) > self.keep:
                self._deltas.popitem(last=False)
        self.version = version
        return self.reference

    def _full(self) -> bytes:
        if self._full_payload is None or self._full_payload[0] != self.version:
            payload = self.full.encode(self.reference, _ctx(self.seed, self.version))
            self._full_payload = (self.version, payload)
        return self._full_payload[1]

    def send(self, cid: ClientId) -> Message:
        """What ``cid`` is sent to hold the current reference; records that it holds it."""
        if self.version < 0:
            raise RuntimeError("send before publish: there is no model to send yet")
        have = self._held.get(cid)
        self._held[cid] = self.version
        if have == self.version:
            return Message(self.version, None, ())
        chain = [] if have is None else list(range(have + 1, self.version + 1))
        if chain and all(v in self._deltas for v in chain):
            deltas = tuple((v, self._deltas[v]) for v in chain)
            if sum(len(p) for _, p in deltas) < len(self._full()):
                return Message(self.version, None, deltas)
        return Message(self.version, self._full(), ())

    def receive(self, msg: Message, held: Params | None, template: Params) -> Params:
        """Participant side: the model ``msg`` leaves it with (``template`` gives the layout)."""
        model = held
        if msg.full is not None:
            model = self.full.decode(msg.full, _ctx(self.seed, msg.version), template)
        if model is None:
            raise ValueError("a delta message needs the model it is a delta to (held)")
        for v, payload in msg.deltas:
            ctx = _ctx(self.seed, v)
            model = _apply(model, self.pipeline.decode(payload, ctx, model))
        return model

    # --- checkpointing, in the flat ``name -> tensor`` form of Pipeline.state_tensors ------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"ref{_SEP}{k}": v.contiguous() for k, v in self.reference.items()}
        out["version"] = torch.tensor(self.version)
        out.update({f"held{_SEP}{c}": torch.tensor(v) for c, v in self._held.items()})
        for v, p in self._deltas.items():
            out[f"delta{_SEP}{v}"] = torch.frombuffer(bytearray(p), dtype=torch.uint8)
        out.update({f"pipe{_SEP}{k}": v for k, v in self.pipeline.state_tensors().items()})
        return out

    def load_state_tensors(self, flat: dict[str, torch.Tensor]) -> None:
        """Restore ``state_tensors()``; an empty map (a checkpoint without one) starts afresh."""
        self.version = int(flat["version"]) if "version" in flat else -1
        self.reference, self._held, self._deltas = {}, {}, OrderedDict()
        pipe: dict[str, torch.Tensor] = {}
        for key, v in flat.items():
            kind, _, rest = key.partition(_SEP)
            if kind == "ref":
                self.reference[rest] = v.clone()
            elif kind == "held":
                self._held[rest] = int(v)
            elif kind == "delta":
                self._deltas[int(rest)] = v.numpy().tobytes()
            elif kind == "pipe":
                pipe[rest] = v
        self._deltas = OrderedDict(sorted(self._deltas.items()))
        self.pipeline.load_state_tensors(pipe)
        self._full_payload = None
