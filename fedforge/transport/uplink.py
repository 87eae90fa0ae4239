"""The participant stack's plan on the wire: the uplink pipeline as a JSON description.

Every participant runs its own stack (``fedforge.participant``): over gRPC the participant
process rebuilds the federation's uplink pipeline from the description each ``fit`` task
carries (``spec``/``parse``: an allow-list of transforms and their constructor fields, no
pickle) and encodes with the task's seeds (``RoundInfo.uplink_seed``/``round_seed``, from
``Server.transform_context``), so gRPC and simulation stay bit-identical. The participant
sends what its stack produced (the ``UPLOAD`` tensor of encoded bytes), the server decodes.

Local DP (``LocalGaussian``) is among the transforms: its noise is added in the
participant's process, so the server never sees the raw update. A transform that cannot be
described is refused when the gRPC backend starts (``GrpcBackend.start``).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from fedforge.algorithms import FedNova, Plain, Scaffold
from fedforge.participant import Plan
from fedforge.transforms import (
    Cast,
    ErrorFeedback,
    LowRank,
    Pipeline,
    Quantize,
    RandomK,
    TopK,
    Transform,
    Zstd,
)

_KINDS: dict[str, type] = {
    "cast": Cast,
    "quantize": Quantize,
    "topk": TopK,
    "randomk": RandomK,
    "lowrank": LowRank,
    "zstd": Zstd,
}
try:  # local DP needs the privacy extra (dp-accounting); without it, it cannot be built
    from fedforge.privacy.local import LocalGaussian

    _KINDS["local_dp"] = LocalGaussian
except ImportError:  # pragma: no cover - the privacy extra is installed with the tests
    pass
_NAMES = {v: k for k, v in _KINDS.items()}


def kinds() -> list[str]:
    """The transform kinds a participant process can rebuild."""
    return sorted([*_KINDS, "error_feedback"])
_SCALARS = (bool, int, float, str, type(None))


class SpecError(ValueError):
    """A pipeline that cannot be described on the wire, or a spec that cannot be rebuilt."""


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


_ALGORITHMS: dict[str, type] = {"fedavg": Plain, "scaffold": Scaffold, "fednova": FedNova}
try:  # FLoRA needs the llm extra (peft) only on the participant that trains
    from fedforge.llm.flora import Flora

    _ALGORITHMS["flora"] = Flora
except ImportError:  # pragma: no cover - the llm extra is installed with the tests
    pass


def _fields(obj: object) -> dict[str, Any]:
    assert dataclasses.is_dataclass(obj)
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}


def describe(plan: Plan) -> str:
    """The participant stack's plan as JSON: ``{"algorithm": {...}, "uplink": [...]}``
    (raises ``SpecError`` for a part a participant process could not rebuild)."""
    alg = plan.algorithm
    if _ALGORITHMS.get(alg.kind) is not type(alg):
        raise SpecError(f"algorithm {alg.kind!r} cannot be sent to participants")
    uplink = [_describe(t) for t in plan.uplink.transforms]
    return json.dumps({"algorithm": {"kind": alg.kind, **_fields(alg)}, "uplink": uplink})


def rebuild(text: str) -> Plan:
    """The ``Plan`` that ``describe`` described (raises ``SpecError``)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"plan is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != {"algorithm", "uplink"}:
        raise SpecError("a plan is an object with exactly 'algorithm' and 'uplink'")
    a = doc["algorithm"]
    cls = _ALGORITHMS.get(str(a.get("kind"))) if isinstance(a, dict) else None
    if cls is None:
        raise SpecError(f"unknown algorithm {a!r}; known: {sorted(_ALGORITHMS)}")
    args = {k: v for k, v in a.items() if k != "kind"}
    allowed = {f.name for f in dataclasses.fields(cls) if f.init}
    if not set(args) <= allowed or not all(isinstance(v, _SCALARS) for v in args.values()):
        raise SpecError(f"{a['kind']}: fields {sorted(args)} not among {sorted(allowed)}")
    try:
        algorithm = cls(**args)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{a['kind']}: {exc}") from exc
    return Plan(parse(json.dumps(doc["uplink"])), algorithm)


def algorithms() -> list[str]:
    """The algorithm kinds a participant process can rebuild."""
    return sorted(_ALGORITHMS)
