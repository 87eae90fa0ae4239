"""The sequential backend: one participant at a time, in this process. Bit-reproducible."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence

import torch

from fedforge.client.types import Client, ClientFailure, EvalResult, FitResult, describe
from fedforge.params import ClientId, Params
from fedforge.server.backend import Job

log = logging.getLogger(__name__)


class Sequential:
    name = "sequential"

    def __init__(self, threads: int | None = None) -> None:
        """``threads`` pins torch's intra-op threads while clients run (None: leave as is)."""
        self.threads = threads
        self._clients: Mapping[ClientId, Client] = {}

    def start(self, clients: Mapping[ClientId, Client]) -> None:
        self._clients = clients

    def _run(
        self, jobs: Sequence[Job], call: str, params: Params
    ) -> Iterator[tuple[ClientId, object]]:
        before = torch.get_num_threads()
        for cid, info in jobs:
            if self.threads is not None:
                torch.set_num_threads(self.threads)
            try:
                result = getattr(self._clients[cid], call)(params, info)
            except Exception as exc:  # a participant's failure must not stop the round
                log.warning("client %s failed in %s: %s", cid, call, describe(exc))
                result = ClientFailure(describe(exc))
            finally:
                torch.set_num_threads(before)
            yield cid, result

    def fit(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, FitResult | ClientFailure]]:
        return self._run(jobs, "fit", params)  # type: ignore[return-value]

    def evaluate(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, EvalResult | ClientFailure]]:
        return self._run(jobs, "evaluate", params)  # type: ignore[return-value]

    def close(self) -> None:
        self._clients = {}
