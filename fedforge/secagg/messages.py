"""What crosses the wire in a secure aggregation round, as inspectable records.

Every message goes through the server (participants have no direct links),
so the transcript of a round is exactly what an honest-but-curious server
sees. Tests read it to check that no masked input equals a participant's
quantized update; benchmarks read its byte counts. ``nbytes`` is the size of
a compact binary encoding (32-bit ids, raw keys, raw ciphertexts, packed
words), the figure a gRPC transport would come close to.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum

from fedforge.params import ClientId

SERVER: ClientId = "<server>"
ID_BYTES = 4


class Stage(Enum):
    """The protocol's stages, in order (Bonawitz et al. 2017, rounds 0 to 4)."""

    ADVERTISE = "advertise_keys"  # participants send two public keys
    SHARE = "share_keys"  # participants send encrypted shares, relayed to neighbours
    CHECK = "check_shares"  # recipients report shares that failed to authenticate
    MASKED_INPUT = "masked_input"  # participants send their masked, quantized update
    UNMASK = "unmask"  # survivors send the shares the server needs


@dataclass(frozen=True)
class Message:
    round: int
    stage: Stage
    sender: ClientId  # SERVER or a participant
    recipient: ClientId
    kind: str  # what the payload is, e.g. "public_keys", "ciphertext", "masked_input"
    nbytes: int
    payload: object | None = None  # kept only when the transcript keeps payloads


@dataclass
class Transcript:
    """Every message of every round, in order, with payloads if ``keep_payloads``."""

    keep_payloads: bool = False
    messages: list[Message] = field(default_factory=list)

    def record(
        self,
        round_: int,
        stage: Stage,
        sender: ClientId,
        recipient: ClientId,
        kind: str,
        nbytes: int,
        payload: object,
    ) -> None:
        kept = payload if self.keep_payloads else None
        self.messages.append(Message(round_, stage, sender, recipient, kind, nbytes, kept))

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages)

    def of_round(self, round_: int) -> list[Message]:
        return [m for m in self.messages if m.round == round_]

    def bytes_up(self, round_: int) -> dict[ClientId, int]:
        """Bytes each participant sent in ``round_``."""
        out: dict[ClientId, int] = {}
        for m in self.of_round(round_):
            if m.sender != SERVER:
                out[m.sender] = out.get(m.sender, 0) + m.nbytes
        return out

    def bytes_down(self, round_: int) -> dict[ClientId, int]:
        """Bytes each participant received in ``round_``."""
        out: dict[ClientId, int] = {}
        for m in self.of_round(round_):
            if m.sender == SERVER:
                out[m.recipient] = out.get(m.recipient, 0) + m.nbytes
        return out
