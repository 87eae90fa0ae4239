"""Named-tensor parameter math: the one module every other part of fedforge reuses.

``Params`` is an ordered ``dict[str, Tensor]`` (the shape of a ``state_dict``).
Functions here are pure: they return new tensors and never touch their inputs,
except the explicitly in-place ``*_`` variants used by streaming aggregation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Params = dict[str, Tensor]
ClientId = str


def clone(p: Mapping[str, Tensor]) -> Params:
    return {k: v.detach().clone() for k, v in p.items()}


def zeros_like(p: Mapping[str, Tensor]) -> Params:
    return {k: torch.zeros_like(v) for k, v in p.items()}


def add(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Params:
    check_same_structure(a, b)
    return {k: a[k] + b[k] for k in a}


def sub(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> Params:
    check_same_structure(a, b)
    return {k: a[k] - b[k] for k in a}


def scale(p: Mapping[str, Tensor], s: float) -> Params:
    return {k: v * s for k, v in p.items()}


def weighted_sum(ps: Sequence[Mapping[str, Tensor]], weights: Sequence[float]) -> Params:
    if len(ps) != len(weights):
        raise ValueError(f"{len(ps)} params but {len(weights)} weights")
    if not ps:
        raise ValueError("weighted_sum of no params")
    out = zeros_like(ps[0])
    for p, w in zip(ps, weights, strict=True):
        add_(out, p, alpha=w)
    return out


def add_(acc: Params, p: Mapping[str, Tensor], alpha: float = 1.0) -> Params:
    """``acc += alpha * p`` in place; returns ``acc``."""
    check_same_structure(acc, p)
    for k, v in acc.items():
        v.add_(p[k].to(v.dtype), alpha=alpha)
    return acc


def l2_norm(p: Mapping[str, Tensor]) -> float:
    """Global L2 norm over all tensors, as if they were one flat vector."""
    if not p:
        return 0.0
    sq = sum(float(v.detach().double().pow(2).sum()) for v in p.values())
    return float(sq**0.5)


def is_finite(p: Mapping[str, Tensor]) -> bool:
    return all(tensor_is_finite(v) for v in p.values() if v.is_floating_point())


def tensor_is_finite(t: Tensor) -> bool:
    """True if no element of ``t`` is NaN or +-Inf.

    A NaN or an infinity in ``t`` makes its sum NaN or infinite, so a finite sum proves
    every element finite: one read-only reduction, no mask. Measured here (1 thread): 7 ms
    for 100 MB against 250 ms for ``isfinite(t).all()``, and 8 against 59 us for a
    7,850-parameter update. Only when the sum is not finite (a non-finite element, or a
    sum of finite elements that overflows) is the elementwise test run to decide.
    """
    if math.isfinite(t.sum().item()):
        return True
    return bool(torch.isfinite(t).all())


def contiguous_span(p: Mapping[str, Tensor], names: Sequence[str]) -> Tensor | None:
    """``p[names]`` as ONE flat tensor, if they lie back to back in one storage in this
    order (contiguous, one dtype and device): a view, no copy. None otherwise.

    A whole update then costs one kernel per operation (a finiteness check, a fold into an
    accumulator) instead of one per tensor; backends that compute many updates together
    lay each participant's update out this way."""
    if not names:
        return None
    first = p[names[0]]
    storage = first.untyped_storage()
    ptr = storage.data_ptr()
    start = expect = first.storage_offset()
    for name in names:
        t = p[name]
        if (
            t.dtype != first.dtype
            or t.device != first.device
            or not t.is_contiguous()
            or t.storage_offset() != expect
            or t.untyped_storage().data_ptr() != ptr
        ):
            return None
        expect += t.numel()
    return torch.empty(0, dtype=first.dtype, device=first.device).set_(
        storage, start, (expect - start,), (1,)
    )


def num_elements(p: Mapping[str, Tensor]) -> int:
    return sum(v.numel() for v in p.values())


def num_bytes(p: Mapping[str, Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in p.values())


@dataclass(frozen=True)
class Spec:
    """Names, shapes and dtypes of a ``Params``: what ``unflatten`` needs to invert ``flatten``."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[torch.dtype, ...]

    @staticmethod
    def of(p: Mapping[str, Tensor]) -> Spec:
        return Spec(
            tuple(p), tuple(tuple(v.shape) for v in p.values()), tuple(v.dtype for v in p.values())
        )

    def numel(self) -> int:
        n = 0
        for s in self.shapes:
            k = 1
            for d in s:
                k *= d
            n += k
        return n

    def describe_mismatch(self, other: Spec) -> str | None:
        """A human-readable reason why ``other`` differs from ``self``, or None if equal."""
        if self.names != other.names:
            missing = sorted(set(self.names) - set(other.names))
            extra = sorted(set(other.names) - set(self.names))
            if missing or extra:
                return f"missing tensors {missing[:5]}, unexpected tensors {extra[:5]}"
            return "tensors in a different order"
        for n, a, b in zip(self.names, self.shapes, other.shapes, strict=True):
            if a != b:
                return f"tensor {n!r} has shape {list(b)}, expected {list(a)}"
        for n, want, got in zip(self.names, self.dtypes, other.dtypes, strict=True):
            if want != got:
                return f"tensor {n!r} has dtype {got}, expected {want}"
        return None


def flatten(p: Mapping[str, Tensor], dtype: torch.dtype | None = None) -> tuple[Tensor, Spec]:
    """Concatenate all tensors into one 1-D vector (in key order) plus the spec to undo it."""
    spec = Spec.of(p)
    if not p:
        return torch.empty(0, dtype=dtype or torch.float32), spec
    dt = dtype or torch.result_type(*[torch.empty(0, dtype=d) for d in spec.dtypes])
    vec = torch.cat([v.detach().reshape(-1).to(dt) for v in p.values()])
    return vec, spec


def unflatten(vec: Tensor, spec: Spec) -> Params:
    if vec.dim() != 1 or vec.numel() != spec.numel():
        raise ValueError(f"vector of {vec.numel()} elements does not fit spec of {spec.numel()}")
    out: Params = {}
    offset = 0
    for name, shape, dtype in zip(spec.names, spec.shapes, spec.dtypes, strict=True):
        n = 1
        for d in shape:
            n *= d
        out[name] = vec[offset : offset + n].reshape(shape).to(dtype).clone()
        offset += n
    return out


def check_same_structure(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> None:
    """Raise ``ValueError`` naming the first difference in names or shapes."""
    if a.keys() != b.keys():
        missing = sorted(set(a) - set(b))
        extra = sorted(set(b) - set(a))
        raise ValueError(f"params differ: missing {missing[:5]}, unexpected {extra[:5]}")
    for k in a:
        if a[k].shape != b[k].shape:
            raise ValueError(f"tensor {k!r}: shape {list(b[k].shape)} != {list(a[k].shape)}")


def from_module(module: torch.nn.Module, names: Iterable[str] | None = None) -> Params:
    """Trainable parameters and floating buffers of ``module`` (detached clones), by name."""
    sd = module.state_dict()
    keys = list(names) if names is not None else [k for k, v in sd.items() if v.is_floating_point()]
    return {k: sd[k].detach().clone() for k in keys}


def load_into(module: torch.nn.Module, p: Mapping[str, Tensor]) -> None:
    """Copy ``p`` into ``module``'s tensors in place (no reallocation, grads untouched)."""
    sd = module.state_dict()
    for k, v in p.items():
        if k not in sd:
            raise KeyError(f"module has no tensor {k!r}")
        with torch.no_grad():
            sd[k].copy_(v)


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def check_id(cid: str) -> str:
    if not _ID.match(cid):
        raise ValueError(
            f"participant id {cid!r}: use letters, digits, '_', '.' and '-' (at most 128, "
            "starting with a letter or digit); it names the site's certificate file"
        )
    return cid
