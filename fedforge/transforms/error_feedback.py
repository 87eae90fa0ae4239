"""Error feedback: what compression dropped is added to the participant's next update.

Stich, Cordonnier & Jaggi, "Sparsified SGD with Memory" (NeurIPS 2018) and
Lin et al., "Deep Gradient Compression" (ICLR 2018, local gradient
accumulation) keep a residual ``r`` per participant. Each round it sends
``C(x + r)`` instead of ``C(x)`` and keeps ``r' = x + r - C(x + r)``, so
over rounds ``sum of what arrived + final r = sum of raw updates``: nothing
is lost, only delayed. Biased compressors such as top-k then converge about
as fast as uncompressed training.

``ErrorFeedback(*inner)`` wraps compressing transforms. The participant runs
the inner encodes, then their decodes (which are deterministic given the
same ``ctx``, so it sees exactly what the server will) to compute the
residual. The residual lives in the participant's ``state``, which the
server checkpoints, so it survives restarts. The inner compression must be
a contraction (``E|C(x) - x|^2 < |x|^2``: top-k, unscaled random-k, fine
quantization); with 1-bit stochastic quantization of a whole tensor, whose
error can exceed the update, the residual grows without bound. Its memory is one model per
participant that has taken part. DGC's momentum correction and warm-up are
not included.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from typing import Annotated, ClassVar, Literal

from pydantic import Field
from torch import Tensor

from fedforge.components import Declaration, OneOf, describe, register
from fedforge.transforms.base import ClientState, Context, Tensors, Transform
from fedforge.transforms.order import validate_order

RESIDUAL = "residual/"


class _Prefixed(MutableMapping[str, Tensor]):
    """The part of a state whose keys start with ``prefix`` (an inner transform's own state)."""

    def __init__(self, state: ClientState, prefix: str) -> None:
        self._state, self._prefix = state, prefix

    def __getitem__(self, key: str) -> Tensor:
        return self._state[self._prefix + key]

    def __setitem__(self, key: str, value: Tensor) -> None:
        self._state[self._prefix + key] = value

    def __delitem__(self, key: str) -> None:
        del self._state[self._prefix + key]

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        return (k[n:] for k in list(self._state) if k.startswith(self._prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class ErrorFeedback:
    """Wrap ``inner`` (in encode order) so that each participant accumulates what they drop."""

    def __init__(self, *inner: Transform) -> None:
        if not inner:
            raise ValueError("inner: ErrorFeedback needs at least one transform to wrap")
        if any(isinstance(t, ErrorFeedback) for t in inner):
            raise ValueError("inner: error feedback cannot wrap another error feedback")
        validate_order(inner)
        self._inner = tuple(inner)

    @property
    def inner(self) -> Sequence[Transform]:
        return self._inner

    @property
    def name(self) -> str:
        return "ef[" + "+".join(t.name for t in self._inner) + "]"

    @property
    def linear(self) -> bool:
        return all(t.linear for t in self._inner)

    def __repr__(self) -> str:
        return f"ErrorFeedback({', '.join(map(repr, self._inner))})"

    def residual(self, state: ClientState) -> Tensors:
        """The residual a participant carries (empty before its first update)."""
        n = len(RESIDUAL)
        return {k[n:]: v for k, v in state.items() if k.startswith(RESIDUAL)}

    def encode(self, x: Tensors, ctx: Context, state: ClientState) -> Tensors:
        y: Tensors = {}
        for k, v in x.items():
            r = state.get(RESIDUAL + k)
            if r is not None and v.is_floating_point():
                if r.shape != v.shape:
                    raise ValueError(
                        f"error-feedback residual of {k!r} has shape {list(r.shape)}, "
                        f"the update {list(v.shape)}: the model changed under a running federation"
                    )
                v = v + r.to(v.dtype)
            y[k] = v
        enc = y
        for i, t in enumerate(self._inner):
            enc = t.encode(enc, ctx, _Prefixed(state, f"inner{i}/"))
        sent = enc
        for t in reversed(self._inner):
            sent = t.decode(sent, ctx)  # exactly what the server will decode
        for k, v in y.items():
            if v.is_floating_point():
                state[RESIDUAL + k] = (v - sent[k].to(v.dtype)).detach().contiguous()
        return enc

    def decode(self, x: Tensors, ctx: Context) -> Tensors:
        for t in reversed(self._inner):
            x = t.decode(x, ctx)
        return x


@register("transform", "error_feedback")
class ErrorFeedbackDeclaration(Declaration):
    """``{"kind": "error_feedback", "inner": [...]}``: ``ErrorFeedback`` around the declared
    ``inner`` transforms (in encode order; error feedback does not nest)."""

    kind: Literal["error_feedback"] = "error_feedback"
    inner: list[Annotated[Declaration, OneOf("transform", without=("error_feedback",))]] = Field(
        min_length=1
    )
    runtime: ClassVar[type | None] = ErrorFeedback

    def build(self) -> ErrorFeedback:
        return ErrorFeedback(*(d.build() for d in self.inner))

    @classmethod
    def of(cls, obj: ErrorFeedback) -> ErrorFeedbackDeclaration:
        return cls(inner=[describe("transform", t) for t in obj.inner])
