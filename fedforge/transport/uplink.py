"""Uplink compression over gRPC: the participant encodes, the server only decodes.

In simulation ``Server._receive`` runs the uplink ``Pipeline``'s encode and decode in one
process. Over gRPC the encode must run on the participant, so that the socket carries the
compressed bytes: each ``fit`` task's header carries the pipeline as a JSON spec
(``spec``/``parse``, built from an allow-list of transforms and their constructor fields,
no pickle) and the task's transform seeds, the same ``Context`` the server decodes with
(``Server.transform_context``: ``derive_seed(seed, "transform", round, client)`` and
``derive_seed(seed, "transform-round", round)``), so gRPC and simulation stay bit-identical.

The participant sends the encoded bytes as the result's only tensor, ``uplink.payload``
(uint8, one byte per payload byte), and the server hands ``Server`` an ``EncodedFitResult``
whose ``encoded`` bytes it decodes and validates; the history counts ``len(encoded)``.

Per-participant transform state (error feedback's residual) lives in the participant
process (``UplinkEncoder``, keyed by participant id, like the simulation's pipeline state).
It survives reconnects within the process but not a restart of the participant process,
and it is not in the server's checkpoints (the server never sees it).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import torch

from fedforge.client.types import FitResult
from fedforge.params import ClientId, Params
from fedforge.transforms import (
    Cast,
    Context,
    ErrorFeedback,
    LowRank,
    Pipeline,
    Quantize,
    RandomK,
    TopK,
    Transform,
    Zstd,
)

PAYLOAD = "uplink.payload"  # the name of an encoded result's only tensor

_KINDS: dict[str, type] = {
    "cast": Cast,
    "quantize": Quantize,
    "topk": TopK,
    "randomk": RandomK,
    "lowrank": LowRank,
    "zstd": Zstd,
}
_NAMES = {v: k for k, v in _KINDS.items()}
_SCALARS = (bool, int, float, str, type(None))


class SpecError(ValueError):
    """A pipeline that cannot be described on the wire, or a spec that cannot be rebuilt."""


@dataclass(frozen=True)
class EncodedFitResult(FitResult):
    """A fit result whose update arrived encoded by the uplink pipeline (``update`` is empty)."""

    encoded: bytes = b""


def _describe(t: Transform) -> dict[str, Any]:
    if isinstance(t, ErrorFeedback):
        return {"kind": "error_feedback", "inner": [_describe(i) for i in t.inner]}
    kind = _NAMES.get(type(t))
    if kind is None or not dataclasses.is_dataclass(t):
        raise SpecError(f"transform {getattr(t, 'name', t)!r} cannot be sent to participants")
    out: dict[str, Any] = {"kind": kind}
    for f in dataclasses.fields(t):
        if f.init:
            v = getattr(t, f.name)
            if not isinstance(v, _SCALARS):
                raise SpecError(f"transform {t.name!r}: field {f.name} is not a scalar")
            out[f.name] = v
    return out


def spec(pipeline: Pipeline) -> str:
    """The pipeline as a JSON list of ``{"kind": ..., field: value}`` (raises ``SpecError``)."""
    return json.dumps([_describe(t) for t in pipeline.transforms], sort_keys=True)


def _build(d: object, nested: bool = False) -> Transform:
    if not isinstance(d, dict) or not isinstance(d.get("kind"), str):
        raise SpecError(f"a transform spec must be an object with a kind, got {d!r}")
    kind = d["kind"]
    args = {k: v for k, v in d.items() if k != "kind"}
    if kind == "error_feedback" and not nested:
        inner = args.pop("inner", None)
        if args or not isinstance(inner, list) or not inner:
            raise SpecError("error_feedback needs a non-empty inner list and nothing else")
        return ErrorFeedback(*(_build(i, nested=True) for i in inner))
    cls = _KINDS.get(kind)
    if cls is None:
        raise SpecError(f"unknown transform kind {kind!r}")
    allowed = {f.name for f in dataclasses.fields(cls) if f.init}
    if not set(args) <= allowed or not all(isinstance(v, _SCALARS) for v in args.values()):
        raise SpecError(f"{kind}: fields {sorted(args)} not among {sorted(allowed)}")
    try:
        t: Transform = cls(**args)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{kind}: {exc}") from exc
    return t


def parse(text: str) -> Pipeline:
    """Rebuild the pipeline ``spec`` described (raises ``SpecError``)."""
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"pipeline spec is not JSON: {exc}") from exc
    if not isinstance(items, list):
        raise SpecError("pipeline spec must be a list")
    try:
        return Pipeline([_build(d) for d in items])
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:
        raise SpecError(str(exc)) from exc


class UplinkEncoder:
    """The participant side: one pipeline (rebuilt when the spec changes) and its state."""

    def __init__(self) -> None:
        self._spec: str | None = None
        self._pipeline = Pipeline()
        self._state: dict[ClientId, Any] = {}

    def pipeline(self, text: str) -> Pipeline:
        if text != self._spec:
            self._pipeline = parse(text)
            self._pipeline._state = self._state  # per-participant state outlives the spec
            self._spec = text
        return self._pipeline

    def encode(self, text: str, update: Params, ctx: Context) -> bytes:
        return self.pipeline(text).encode(update, ctx)


def as_tensor(payload: bytes) -> torch.Tensor:
    return (
        torch.frombuffer(bytearray(payload), dtype=torch.uint8)
        if payload
        else torch.empty(0, dtype=torch.uint8)
    )
