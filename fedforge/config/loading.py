"""Reading a configuration: a TOML or YAML file, ``--set a.b=c`` overrides applied to the
raw document, validation against the schema with errors that name the key and what is
allowed there, and the resolved configuration dumped as YAML for the run directory."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from fedforge import components
from fedforge.components import ConfigError, one_of
from fedforge.config.schema import ExperimentConfig, refresh

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_document(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            doc = tomllib.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            doc = yaml.safe_load(text) or {}
        else:
            raise ConfigError(f"config file {p} must end in .toml, .yaml or .yml")
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p} is not valid {p.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{p} must hold a mapping at the top level")
    return doc


def apply_overrides(doc: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a copy of ``doc``."""
    out = json.loads(json.dumps(doc))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        parts = key.strip().split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return out


def _variants(model: type[BaseModel], name: str) -> list[type[BaseModel]]:
    """The models a section's key may hold: a declared component's registered kinds
    (``OneOf``), a plain section, or the members of a union of sections."""
    info = model.model_fields[name]
    declared = one_of(info.metadata)
    if declared is not None:
        return list(declared.choices())
    ann = info.annotation
    return [
        v
        for v in getattr(ann, "__args__", (ann,))
        if isinstance(v, type) and issubclass(v, BaseModel)
    ]


def _tag_field(variants: list[type[BaseModel]]) -> str | None:
    for tag in ("dataset", "name", "kind"):
        if all(tag in v.model_fields for v in variants):
            return tag
    return None


def _resolve(loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """The user-facing key of an error location, and the section model that holds it.

    Pydantic puts the chosen variant's tag into locations inside tagged unions
    (``data.fashion_mnist.partition.dirichlet.alpha``); the tags are dropped from
    the key and used to pick the variant.
    """
    section: type[BaseModel] | None = ExperimentConfig
    shown: list[str] = []
    pending: list[type[BaseModel]] = []
    for i, part in enumerate(loc):
        if pending:
            tag = _tag_field(pending)
            match = [v for v in pending if tag and v.model_fields[tag].default == part]
            pending = []
            if match:
                section = match[0]
                continue
        shown.append(str(part))
        if i == len(loc) - 1:
            break
        if section is None or part not in section.model_fields:
            section = None
            continue
        variants = _variants(section, str(part))
        section = variants[0] if len(variants) == 1 else None
        pending = variants if len(variants) > 1 else []
    return ".".join(shown), section


def format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not str(p).startswith(("function-", "tagged-")))
        key, section = _resolve(loc)
        if e["type"] == "extra_forbidden":
            allowed = list(section.model_fields) if section is not None else []
            hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{key}: unknown key{hint}")
        elif e["type"] == "union_tag_invalid":
            lines.append(f"{key}: {e['msg']}")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{key or 'config'}: {e['msg']}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def _fill_tags(model: type[BaseModel], node: dict[str, Any]) -> None:
    """Where a section of a tagged variant omits its tag, fill in the default variant's tag.

    So ``--set data.partition.alpha=0.1`` refines the default partition instead of failing
    with "unable to extract tag".
    """
    for name, info in model.model_fields.items():
        value = node.get(name)
        if not isinstance(value, dict):
            continue
        variants = _variants(model, name)
        if not variants:
            continue
        chosen = variants[0]
        tag = _tag_field(variants) if len(variants) > 1 else None
        if tag is not None:
            default = info.get_default(call_default_factory=True)
            value.setdefault(tag, getattr(default, tag))
            chosen = next(
                (v for v in variants if v.model_fields[tag].default == value[tag]), variants[0]
            )
        _fill_tags(chosen, value)


def _no_site_paths(doc: dict[str, Any]) -> None:
    """A federation config whose site-kind ``[data]`` names a file: say where files go."""
    data = doc.get("data")
    if not isinstance(data, dict):
        return
    kind = str(data.get("dataset"))
    decl = components.get("dataset", kind) if kind in components.kinds("dataset") else None
    named = [k for k in ("path", "paths", "file", "files") if k in data]
    if decl is not None and getattr(decl, "site_data", False) and named:
        raise ConfigError(
            f"data.{named[0]}: a federation config names no site's data; each site gives its "
            "own file in its site config ([data] path = ...), and a simulation lists the site "
            "configs in [federation] sites"
        )


def validate(doc: dict[str, Any]) -> ExperimentConfig:
    refresh()  # kinds registered since the schema was built
    doc = json.loads(json.dumps(doc))
    _no_site_paths(doc)
    _fill_tags(ExperimentConfig, doc)
    try:
        return ExperimentConfig.model_validate(doc)
    except ValidationError as err:
        raise ConfigError(format_errors(err)) from None


def load(path: str | Path | None, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read ``path`` (or the built-in defaults when None), apply overrides, validate."""
    doc = read_document(path) if path is not None else {}
    fed = doc.get("federation")
    if path is not None and isinstance(fed, dict) and isinstance(fed.get("sites"), list):
        base = Path(path).parent  # site configs are named relative to the federation config
        fed["sites"] = [
            str((base / s).resolve()) if isinstance(s, str) else s for s in fed["sites"]
        ]
    return validate(apply_overrides(doc, overrides))


def dump(cfg: ExperimentConfig) -> str:
    """The resolved configuration as YAML (what a run directory records)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
