"""Where participants run. The server hands a backend (client id, RoundInfo)
jobs and the global parameters; the backend yields results *in job order*,
one at a time, so the server can fold each into a streaming aggregate and
drop it (memory O(model), and the same summation order on every backend).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from fedforge.client.types import Client, EvalResult, FitResult, RoundInfo
from fedforge.params import ClientId, Params

Job = tuple[ClientId, RoundInfo]


@dataclass(frozen=True)
class ClientFailure:
    """A participant that raised, crashed or dropped; ``reason`` goes to the log and history."""

    reason: str


class Backend(Protocol):
    name: str

    def start(self, clients: Mapping[ClientId, Client]) -> None: ...

    def fit(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, FitResult | ClientFailure]]: ...

    def evaluate(
        self, jobs: Sequence[Job], params: Params
    ) -> Iterator[tuple[ClientId, EvalResult | ClientFailure]]: ...

    def close(self) -> None: ...


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
