"""An algorithm is a set of round hooks, never a second round loop.

The ``Server``'s round (``fedforge.server``) calls, in order:

    broadcast  ``state`` tensors the algorithm sends with the global parameters
               (SCAFFOLD's server control variate), named ``<kind>/<param>``
    local      on the participant, in its stack: how ``Client.fit`` is run and what the
               upload adds beside the update (SCAFFOLD's control-variate delta, FedNova's
               step count), with the participant's own persistent ``state``
    aggregate  the server's aggregator folds the update and the algorithm's extras alike
               (``layout`` gives an upload's tensors, so validation and accumulators know
               them; None where each participant's layout is its own, FLoRA's ranks, and
               the algorithm's ``check`` validates an upload instead)
    finalize   the aggregate becomes the model step and the next algorithm state

``Plain`` (FedAvg, FedProx: the client decides) is the identity at every hook. The server optimizer (``fedforge.optim``) then
applies the model step, so FedAdam over SCAFFOLD is a configuration, not new code.
Algorithms are frozen dataclasses: the same object serves both sides and is described
to gRPC participants by its fields (``fedforge.transport.uplink``).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from torch import Tensor

from fedforge.client.types import Client, FitResult, RoundInfo
from fedforge.client.validation import check_update
from fedforge.components import register
from fedforge.params import Params

AlgoState = MutableMapping[str, Tensor]


class Algorithm(Protocol):
    kind: ClassVar[str]

    def init_state(self, params: Params) -> Params:
        """The server's algorithm state before round 1 (checkpointed with the model)."""
        ...

    def broadcast(self, state: Params) -> Params:
        """What participants receive beside the parameters (names ``<kind>/...``)."""
        ...

    def layout(self, params: Params) -> Params | None:
        """An upload's tensors (the update's and the algorithm's extras, any values), or
        None when each participant's upload has a layout of its own."""
        ...

    def check(self, result: FitResult, params: Params) -> str | None:
        """Why an upload must be left out, or None: ``check_update`` against ``layout``."""
        ...

    def local(
        self, client: Client, params: Params, received: Params, info: RoundInfo, state: AlgoState
    ) -> FitResult:
        """The participant's side: run ``client`` and return the update plus the extras."""
        ...

    def finalize(
        self, aggregate: Params, extras: Params, state: Params, sampled: int, population: int
    ) -> tuple[Params, Params]:
        """(the model step for the server optimizer, the next state)."""
        ...


@runtime_checkable
class CorrectedClient(Protocol):
    """A client whose local loop adds a fixed ``correction`` to every gradient step."""

    def fit_corrected(self, params: Params, info: RoundInfo, correction: Params) -> FitResult: ...


def split(params: Params, kind: str) -> tuple[Params, Params]:
    """(the model's tensors, the algorithm's ``<kind>/...`` tensors)."""
    prefix = kind + "/"
    own = {k: v for k, v in params.items() if not k.startswith(prefix)}
    return own, {k: v for k, v in params.items() if k.startswith(prefix)}


@register("algorithm", "fedavg")
@dataclass(frozen=True)
class Plain:
    """McMahan et al. 2017 (and FedProx, Li et al. 2020, whose proximal term is the
    client's): participants train, the server steps with the aggregate as it is."""

    kind: ClassVar[str] = "fedavg"
    client_keys: ClassVar[dict[str, str]] = {}  # nothing of the local settings

    def init_state(self, params: Params) -> Params:
        return {}

    def broadcast(self, state: Params) -> Params:
        return {}

    def layout(self, params: Params) -> Params | None:
        return params

    def check(self, result: FitResult, params: Params) -> str | None:
        return check_update(result, params)

    def local(
        self, client: Client, params: Params, received: Params, info: RoundInfo, state: AlgoState
    ) -> FitResult:
        return client.fit(params, info)

    def finalize(
        self, aggregate: Params, extras: Params, state: Params, sampled: int, population: int
    ) -> tuple[Params, Params]:
        return aggregate, state
