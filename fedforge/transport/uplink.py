"""The participant stack's plan on the wire: the uplink pipeline as a JSON description.

Every participant runs its own stack (``fedforge.participant``): over gRPC the participant
process rebuilds the federation's uplink pipeline from the description each ``fit`` task
carries (``spec``/``parse``: the declarations of ``fedforge.components``, as JSON, no
pickle: a kind or field not declared is refused with the declared ones) and encodes with the task's seeds (``RoundInfo.uplink_seed``/``round_seed``, from
``Server.transform_context``), so gRPC and simulation stay bit-identical. The participant
sends what its stack produced (the ``UPLOAD`` tensor of encoded bytes), the server decodes.

Local DP (``LocalGaussian``) is among the transforms: its noise is added in the
participant's process, so the server never sees the raw update. A transform that cannot be
described is refused when the gRPC backend starts (``GrpcBackend.start``).
"""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, ValidationError

import fedforge.algorithms
import fedforge.transforms  # noqa: F401 - the declared transforms and algorithms
from fedforge import components
from fedforge.components import Declaration, OneOf, UnknownKind
from fedforge.participant import Plan
from fedforge.transforms import Pipeline, Transform

# local DP needs the privacy extra (dp-accounting), FLoRA the llm extra (peft, imported
# only when a participant trains); without them they cannot be rebuilt
with contextlib.suppress(ImportError):
    import fedforge.privacy.local
with contextlib.suppress(ImportError):
    import fedforge.llm.flora  # noqa: F401


class SpecError(ValueError):
    """A pipeline that cannot be described on the wire, or a spec that cannot be rebuilt."""


def kinds() -> list[str]:
    """The transform kinds a participant process can rebuild."""
    return components.kinds("transform")


def algorithms() -> list[str]:
    """The algorithm kinds a participant process can rebuild."""
    return components.kinds("algorithm")


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Pipeline(_Wire):
    uplink: list[Annotated[Declaration, OneOf("transform", wire=True)]]


class _Plan(_Pipeline):
    algorithm: Annotated[Declaration, OneOf("algorithm", wire=True)]


_built = components.version()


def _validate(model: type[_Wire], doc: str) -> Any:
    global _built
    if _built != components.version():  # kinds registered since the models were built
        components.rebuild(_Pipeline, _Plan)
        _built = components.version()
    try:
        return model.model_validate_json(doc, strict=True)
    except ValidationError as exc:
        raise SpecError(_reasons(exc)) from None


def _reasons(exc: ValidationError) -> str:
    lines = []
    for e in exc.errors():
        where = ".".join(map(str, e["loc"]))
        if e["type"] == "extra_forbidden":
            family: components.Family = "algorithm" if e["loc"][0] == "algorithm" else "transform"
            try:
                allowed = ", ".join(components.get(family, str(e["loc"][-2])).model_fields)
            except (UnknownKind, IndexError):
                allowed = "?"
            lines.append(f"{where}: unknown field; allowed: {allowed}")
        else:
            lines.append(f"{where}: {e['msg']}")
    return "; ".join(lines)


def _declared(family: components.Family, obj: Any) -> dict[str, Any]:
    try:
        return components.describe(family, obj).model_dump(mode="json")
    except UnknownKind as exc:
        raise SpecError(f"{exc}: it cannot be sent to participants") from None


def _built_from(decls: list[Declaration]) -> list[Transform]:
    try:
        return [d.build() for d in decls]
    except (TypeError, ValueError) as exc:
        raise SpecError(str(exc)) from exc


def spec(pipeline: Pipeline) -> str:
    """The pipeline as a JSON list of ``{"kind": ..., field: value}`` (raises ``SpecError``)."""
    return json.dumps([_declared("transform", t) for t in pipeline.transforms], sort_keys=True)


def parse(text: str) -> Pipeline:
    """Rebuild the pipeline ``spec`` described (raises ``SpecError``)."""
    doc = _validate(_Pipeline, '{"uplink": ' + text + "}") if _is_json(text) else None
    if doc is None:
        raise SpecError(f"pipeline spec is not JSON: {text[:40]!r}")
    try:
        return Pipeline(_built_from(doc.uplink))
    except SpecError:
        raise
    except ValueError as exc:  # an order that cannot be decoded
        raise SpecError(str(exc)) from exc


def describe(plan: Plan) -> str:
    """The participant stack's plan as JSON: ``{"algorithm": {...}, "uplink": [...]}``
    (raises ``SpecError`` for a part a participant process could not rebuild)."""
    return json.dumps(
        {
            "algorithm": _declared("algorithm", plan.algorithm),
            "uplink": [_declared("transform", t) for t in plan.uplink.transforms],
        }
    )


def rebuild(text: str) -> Plan:
    """The ``Plan`` that ``describe`` described (raises ``SpecError``)."""
    if not _is_json(text):
        raise SpecError(f"plan is not JSON: {text[:40]!r}")
    doc = _validate(_Plan, text)
    try:
        algorithm = doc.algorithm.build()
        return Plan(Pipeline(_built_from(doc.uplink)), algorithm)
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{exc}") from exc


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
