"""``Quorum``: before each round, wait until enough participants are connected.

The first round of a server process (call ``gather`` before ``Server.run``) waits for ``need`` participants, up to
``timeout`` seconds; later rounds wait only until the sampler can be satisfied, so a
federation that lost some participants carries on with the others. If too few are
connected when the wait ends, the server stops before the round with the reason (and a
checkpoint), instead of failing in the sampler.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fedforge.plugins import Plugin
from fedforge.transport.registry import Registry

if TYPE_CHECKING:
    from fedforge.plugins import ServerView

log = logging.getLogger(__name__)


class Quorum(Plugin):
    name = "transport_quorum"

    def __init__(self, registry: Registry, need: int, timeout: float = 600.0) -> None:
        if need < 1:
            raise ValueError(f"need must be >= 1, got {need}")
        self.registry = registry
        self.need = need
        self.timeout = timeout
        self._first = True

    def gather(self, server: ServerView) -> str | None:
        """Wait for the first quorum (call before ``Server.run``, which needs participants
        to exist); return why training cannot start, or None."""
        return self.before_round(server, server.round + 1)

    def before_round(self, server: ServerView, round_: int) -> str | None:
        want = self.need if self._first else server.sampler.count(len(self.registry))
        n = self.registry.wait_for(want, self.timeout)
        if self._first:
            log.info("round %d: %d participants connected (waited for %d)", round_, n, want)
        self._first = False
        k = server.sampler.count(n)
        fed = server.eval_plan.federated
        if n < k or (fed is not None and n < fed.count(n)):
            return f"only {n} participants connected after {self.timeout:g} s; a round needs {k}"
        return None
