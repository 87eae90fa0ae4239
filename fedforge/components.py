"""One declaration per component: its config model, registered by family and kind.

A transform, aggregator, server optimizer, algorithm, data source, partition or model is
declared once, as a pydantic ``Declaration``: the same model validates the config file,
builds the runtime object (``build``) and is the JSON a gRPC participant receives to
rebuild it (``describe`` / ``get(...).model_validate_json``). Two ways to declare:

- ``@register(family, kind)`` on a frozen dataclass: the declaration is derived from the
  dataclass's init fields, their types (constraints as ``Annotated[int, Field(ge=1)]``)
  and their defaults, so the defaults stay written once, on the runtime class, and
  ``build()`` is the constructor. A field with ``metadata=NOT_DECLARED`` (a safety limit,
  a nested object) is neither configured nor sent.
- ``@register(family, kind)`` on a ``Declaration`` subclass with its own ``build``: for
  components built by functions (data sources, models), or with nested declarations.

``OneOf(family)`` in a field's ``Annotated`` type accepts any registered declaration of
that family, chosen by its tag (``kind``; ``name`` for aggregators, optimizers and models;
``dataset`` for data sources), as a pydantic discriminated union would. The union is made
when the schema is generated, so a kind registered later is accepted after the owner
models are rebuilt (``version`` tells when; ``fedforge.config.schema.refresh`` does it).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, create_model
from pydantic_core import core_schema

Family = Literal[
    "transform", "aggregator", "server_optimizer", "algorithm", "dataset", "partition", "model"
]
TAGS: dict[str, str] = {
    "transform": "kind",
    "aggregator": "name",
    "server_optimizer": "name",
    "algorithm": "kind",
    "dataset": "dataset",
    "partition": "kind",
    "model": "name",
}
NOT_DECLARED = {"declared": False}  # dataclass field metadata: not configured, not sent

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, with one line per offending key."""


class UnknownKind(ValueError):
    """A kind (or a runtime object) that no declaration of the family covers."""


class Declaration(BaseModel):
    """A component's config model: validates, builds, and is its description on the wire."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: ClassVar[str] = ""
    tag: ClassVar[str] = ""
    runtime: ClassVar[type | None] = None  # set for declarations derived from a dataclass

    @property
    def arguments(self) -> dict[str, Any]:
        """The fields without the tag: the runtime class's constructor arguments."""
        return {k: getattr(self, k) for k in type(self).model_fields if k != self.tag}

    def build(self, *args: Any, **kwargs: Any) -> Any:
        """The runtime object (derived declarations: the dataclass from ``arguments``)."""
        if self.runtime is None:
            raise NotImplementedError(f"{type(self).__name__} must define build")
        return self.runtime(**self.arguments)

    @classmethod
    def of(cls, obj: Any) -> Declaration:
        """The declaration that builds ``obj`` back (derived declarations only)."""
        names = [k for k in cls.model_fields if k != cls.tag]
        return cls.model_validate({k: getattr(obj, k) for k in names})


@dataclass
class _Entry:
    declaration: type[Declaration]
    in_config: bool


_REGISTRY: dict[str, dict[str, _Entry]] = {family: {} for family in TAGS}
_version = 0


def version() -> int:
    """Bumped by every registration: the config schema rebuilds when it changed."""
    return _version


def _resolve(cls: type, annotation: Any) -> Any:
    if isinstance(annotation, str):  # from __future__ import annotations
        return eval(annotation, vars(sys.modules[cls.__module__]))  # noqa: S307 - our source
    return annotation


def _derive(cls: type, family: str, kind: str) -> type[Declaration]:
    tag = TAGS[family]
    fields: dict[str, Any] = {tag: (Literal[kind], kind)}
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("declared", True) is False:
            continue
        if f.default is not dataclasses.MISSING:
            default = Field(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = Field()  # required
        fields[f.name] = (_resolve(cls, f.type), default)
    model: type[Declaration] = create_model(
        f"{cls.__name__}Declaration",
        __base__=Declaration,
        __module__=cls.__module__,
        __doc__=f"The declaration of ``{cls.__qualname__}`` ({family} {kind!r}).",
        **fields,
    )
    model.runtime = cls
    return model


def register(family: Family, kind: str, *, in_config: bool = True) -> Callable[[T], T]:
    """Declare ``kind`` of ``family`` (decorates a dataclass or a ``Declaration``).

    ``in_config=False``: built from code and sent to participants, but not offered in the
    config file (a component that needs more than its fields: an accountant, a language
    model)."""

    def add(obj: T) -> T:
        global _version
        decl: type[Declaration]
        if isinstance(obj, type) and issubclass(obj, Declaration):
            decl = obj
        elif isinstance(obj, type) and dataclasses.is_dataclass(obj):
            decl = _derive(obj, family, kind)
        else:
            raise TypeError(f"register: {obj!r} is neither a Declaration nor a dataclass")
        decl.family, decl.tag = family, TAGS[family]
        default = decl.model_fields[decl.tag].default if decl.tag in decl.model_fields else None
        if default != kind:
            raise TypeError(f"{decl.__name__}.{decl.tag} must default to {kind!r}")
        known = _REGISTRY[family].get(kind)
        if known is not None and known.declaration.__qualname__ != decl.__qualname__:
            raise ValueError(f"{family} {kind!r} is already declared by {known.declaration}")
        _REGISTRY[family][kind] = _Entry(decl, in_config)
        _version += 1
        _rebuild_nested()  # declarations that hold a OneOf now accept this kind too
        return obj

    return add


def unregister(family: Family, kind: str) -> None:
    """Withdraw ``kind`` (a component declared for a while, e.g. in a test)."""
    global _version
    del _REGISTRY[family][kind]
    _version += 1
    _rebuild_nested()


def kinds(family: Family, *, in_config: bool = False) -> list[str]:
    """The registered kinds of ``family`` (only those offered in config: ``in_config``)."""
    return sorted(k for k, e in _REGISTRY[family].items() if e.in_config or not in_config)


def get(family: Family, kind: str) -> type[Declaration]:
    """The declaration of ``kind`` (``UnknownKind`` names the registered ones)."""
    entry = _REGISTRY[family].get(kind)
    if entry is None:
        raise UnknownKind(f"unknown {family} {kind!r}; known: {', '.join(kinds(family))}")
    return entry.declaration


def describe(family: Family, obj: Any) -> Declaration:
    """The declaration that rebuilds the runtime object ``obj`` (``UnknownKind`` if none)."""
    for entry in _REGISTRY[family].values():
        if entry.declaration.runtime is type(obj):
            return entry.declaration.of(obj)
    raise UnknownKind(
        f"{family} {getattr(obj, 'name', obj)!r} is not declared; known: {', '.join(kinds(family))}"
    )


@dataclass(frozen=True)
class OneOf:
    """In ``Annotated[Declaration, OneOf(family)]``: one declared ``family`` member, chosen
    by its tag (only kinds offered in config, unless ``wire``; never those ``without``)."""

    family: Family
    without: tuple[str, ...] = ()
    wire: bool = False

    def choices(self) -> list[type[Declaration]]:
        names = kinds(self.family, in_config=not self.wire)
        return [get(self.family, k) for k in names if k not in self.without]

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        choices: dict[Any, core_schema.CoreSchema] = {
            d.model_fields[d.tag].default: handler.generate_schema(d) for d in self.choices()
        }
        return core_schema.tagged_union_schema(choices, discriminator=TAGS[self.family])


def _has_one_of(model: type[BaseModel]) -> bool:
    return any(
        one_of(f.metadata)
        or one_of(getattr(f.annotation, "__metadata__", ()))
        or any(
            one_of(getattr(a, "__metadata__", ())) for a in getattr(f.annotation, "__args__", ())
        )
        for f in model.model_fields.values()
    )


def _rebuild_nested() -> None:
    for family in _REGISTRY.values():
        for entry in family.values():
            if _has_one_of(entry.declaration):
                entry.declaration.model_rebuild(force=True)


def rebuild(*owners: type[BaseModel]) -> None:
    """Regenerate the schemas of ``owners`` (in the order given: inner sections first) that
    hold a ``OneOf``, after new registrations (``version`` changed)."""
    for model in owners:
        model.model_rebuild(force=True)


def one_of(annotation_metadata: Iterable[Any]) -> OneOf | None:
    """The ``OneOf`` among a field's ``Annotated`` metadata, if any."""
    return next((m for m in annotation_metadata if isinstance(m, OneOf)), None)


__all__ = [
    "NOT_DECLARED",
    "TAGS",
    "ConfigError",
    "Declaration",
    "Family",
    "OneOf",
    "UnknownKind",
    "describe",
    "get",
    "kinds",
    "one_of",
    "rebuild",
    "register",
    "unregister",
    "version",
]
