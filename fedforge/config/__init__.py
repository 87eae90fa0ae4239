"""Experiment configuration: TOML or YAML, validated before anything trains.

Every section is a pydantic model that forbids unknown keys, and every
choice (dataset, partition, model, optimizer) is a tagged variant with only
its own fields, so a typo or a key that does not belong to the chosen variant
is an error naming the key and what is allowed. ``--set a.b=c`` overrides are
applied to the raw document before validation, so they are checked the same.

``schema`` holds the sections, ``loading`` reads, overrides, validates and dumps;
both are re-exported here (``from fedforge import config as C; C.load(...)``).
"""

from fedforge.components import ConfigError
from fedforge.config.loading import (
    apply_overrides,
    dump,
    format_errors,
    load,
    read_document,
    validate,
)
from fedforge.config.schema import *  # noqa: F403 - the sections, as C.<Section>
from fedforge.config.schema import __all__ as _sections

__all__ = [
    "ConfigError",
    "apply_overrides",
    "dump",
    "format_errors",
    "load",
    "read_document",
    "validate",
    *_sections,
]
