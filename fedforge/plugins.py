"""Plugins: features that cut across the round without subclassing the server.

A plugin sees the server before each round (and may stop training with a
reason, e.g. a privacy budget that the next round would exceed), adds its
figures to each round's record afterwards (e.g. epsilon so far), and keeps
JSON state that is saved with every checkpoint (e.g. an adaptive clipping
bound), so a resumed run continues exactly.

An aggregator that is also a ``Plugin`` (differential privacy's wrappers are)
is registered automatically.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fedforge.aggregate import Aggregator, NormBound
    from fedforge.params import Params
    from fedforge.server.history import Record
    from fedforge.server.sampler import Sampler
    from fedforge.transforms import Pipeline


class EvalView(Protocol):
    @property
    def federated(self) -> Sampler | None: ...


class ServerView(Protocol):
    """What a plugin may read of the server it runs in (``fedforge.server.Server`` is one);
    a protocol, so that plugins below the server's floor need not import it."""

    @property
    def params(self) -> Params: ...
    @property
    def round(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def sampler(self) -> Sampler: ...
    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def aggregator(self) -> Aggregator: ...
    @property
    def update_bound(self) -> NormBound | None: ...
    @property
    def eval_plan(self) -> EvalView: ...


class Plugin:
    """Base class with no-op hooks; override what you need. ``name`` keys the saved state."""

    name: str = "plugin"

    def check(self, server: ServerView) -> None:
        """Raise ``ValueError`` if this plugin cannot work with the server's configuration
        (called once, when the server is built, so errors come before any training)."""

    def before_round(self, server: ServerView, round_: int) -> str | None:
        """Called before round ``round_`` runs; return a reason to stop instead."""
        return None

    def after_round(self, server: ServerView, record: Record) -> None:
        """Called after the round's fit (and evaluation, if any); may add keys to ``record``."""

    def checkpoint_files(self, server: ServerView, folder: Path) -> None:
        """Write files of this plugin's own into a checkpoint's ``folder`` while it is
        written (before the checkpoint appears under its final name), e.g. the global
        adapter as a PEFT folder."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what ``state`` returned (called when resuming from a checkpoint)."""
