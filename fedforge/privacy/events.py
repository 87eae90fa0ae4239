"""DpEvents as JSON, so an accountant's history survives a checkpoint (no pickle).

dp_accounting's events are small frozen ``attrs`` classes. An event becomes
``{"event": "PoissonSampledDpEvent", "sampling_probability": 0.1, "event": {...}}``
recursively; only classes defined in ``dp_accounting.dp_event`` are rebuilt,
so a hostile checkpoint cannot name arbitrary code.
"""

from __future__ import annotations

from typing import Any

import attr
import dp_accounting as dpa
from dp_accounting import dp_event

_KIND = "__event__"


def event_to_json(event: dpa.DpEvent) -> dict[str, Any]:
    out: dict[str, Any] = {_KIND: type(event).__name__}
    for f in attr.fields(type(event)):
        out[f.name] = _value_to_json(getattr(event, f.name))
    return out


def _value_to_json(v: Any) -> Any:
    if isinstance(v, dpa.DpEvent):
        return event_to_json(v)
    if isinstance(v, list | tuple):
        return [_value_to_json(x) for x in v]
    if isinstance(v, bool | int | float | str) or v is None:
        return v
    raise ValueError(f"cannot store {type(v).__name__} in a DpEvent as JSON")


def event_from_json(data: dict[str, Any]) -> dpa.DpEvent:
    name = data.get(_KIND)
    cls = getattr(dp_event, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, dpa.DpEvent)):
        raise ValueError(f"not a dp_accounting event: {name!r}")
    kwargs = {k: _value_from_json(v) for k, v in data.items() if k != _KIND}
    return cls(**kwargs)


def _value_from_json(v: Any) -> Any:
    if isinstance(v, dict):
        return event_from_json(v)
    if isinstance(v, list):
        return [_value_from_json(x) for x in v]
    return v
