"""What vector a participant masks: the flat update, or a linear compression of it.

Without compression the masked vector is the whole update, flattened
(``params.flatten``). With a linear ``Transform`` (e.g. ``RandomK``) every
participant of a round encodes its update under the *same* context, whose
seed comes from the round (public, shared), so all encodings share one
layout: their integer tensors (shape metadata) are equal and public, and
their floating tensors (the kept values) line up coordinate by coordinate.
Only those values are masked and summed, so the wire carries ``k`` words per
participant instead of ``d``; the server decodes the unmasked sum once,
which is the sum of the decodings because the transform is linear
(Konečný et al. 2016's "random mask" updates, under secure aggregation).

The compression here is stateless (a fresh state each round): a transform
with per-participant memory (error feedback) belongs in the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fedforge.params import Params, Spec, flatten, unflatten
from fedforge.seeding import derive_seed
from fedforge.transforms.base import Context, Tensors, Transform


@dataclass(frozen=True)
class Layout:
    spec: Spec  # the model's tensors
    compression: Transform | None
    ctx: Context  # shared by every participant of the round
    values: tuple[tuple[str, int, torch.dtype], ...]  # masked floating tensors: name, size, dtype
    public: dict[str, torch.Tensor]  # the encoding's non-floating tensors (layout metadata)

    @staticmethod
    def of(template: Params, compression: Transform | None, round_: int, seed: int) -> Layout:
        shared = derive_seed(seed, "secagg-compression", round_)
        ctx = Context(round_, "", shared, round_seed=shared)  # one context for the round
        spec = Spec.of(template)
        if compression is None:
            return Layout(spec, None, ctx, (("", spec.numel(), torch.float64),), {})
        enc = compression.encode(dict(template), ctx, {})
        values = tuple(
            (k, v.numel(), v.dtype) for k, v in sorted(enc.items()) if v.is_floating_point()
        )
        public = {k: v for k, v in enc.items() if not v.is_floating_point()}
        return Layout(spec, compression, ctx, values, public)

    @property
    def dim(self) -> int:
        return sum(n for _, n, _ in self.values)

    def vector(self, update: Params) -> np.ndarray:
        """Participant side: the (dim,) float64 vector to mask; ``ValueError`` if the
        encoding does not have the round's layout."""
        if self.compression is None:
            return flatten(update, dtype=torch.float64)[0].numpy()
        enc = self.compression.encode(dict(update), self.ctx, {})
        for k, v in self.public.items():
            if k not in enc or not torch.equal(enc[k], v):
                raise ValueError(f"encoded tensor {k!r} differs from the round's layout")
        parts = []
        for k, n, _ in self.values:
            if k not in enc or enc[k].numel() != n:
                raise ValueError(f"encoded tensor {k!r} does not have {n} values")
            parts.append(enc[k].detach().reshape(-1).to(torch.float64))
        return torch.cat(parts).numpy() if parts else np.zeros(0)

    def params(self, total: np.ndarray) -> Params:
        """Server side: the model-shaped tensors for an unmasked (dim,) sum."""
        vec = torch.from_numpy(total)
        if self.compression is None:
            return unflatten(vec, self.spec)
        enc: Tensors = dict(self.public)
        offset = 0
        for k, n, dtype in self.values:
            enc[k] = vec[offset : offset + n].to(dtype)
            offset += n
        dense = self.compression.decode(enc, self.ctx)
        return {k: dense[k].to(dt) for k, dt in zip(self.spec.names, self.spec.dtypes, strict=True)}
