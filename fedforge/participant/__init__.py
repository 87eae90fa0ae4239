"""The participant stack: a participant's ``Client``, its uplink and its own state."""

from fedforge.participant.stack import (
    UPLOAD,
    Participants,
    Plan,
    Stack,
    State,
    UpdateRefused,
    as_tensor,
    context,
    payload_of,
)

__all__ = [
    "UPLOAD",
    "Participants",
    "Plan",
    "Stack",
    "State",
    "UpdateRefused",
    "as_tensor",
    "context",
    "payload_of",
]
