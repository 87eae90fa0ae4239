"""``Pipeline``: a list of transforms, their per-participant state, and the wire bytes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from fedforge.params import ClientId, Params, Spec
from fedforge.transforms.base import Context, PayloadError, Tensors, Transform
from fedforge.transforms.order import validate_order


class Pipeline:
    def __init__(self, transforms: Sequence[Transform] = ()) -> None:
        names = [t.name for t in transforms]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"transform listed twice: {sorted(dup)}")
        validate_order(transforms)
        self.transforms = tuple(transforms)
        self._state: dict[ClientId, dict[str, dict[str, torch.Tensor]]] = {}

    @property
    def linear(self) -> bool:
        return all(t.linear for t in self.transforms)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.transforms]

    def encode(
        self,
        update: Params,
        ctx: Context,
        state: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> bytes:
        """Participant side: run the transforms and serialize to the bytes the wire carries.

        ``state`` is the participant's own (a participant stack passes it); None keeps it in
        this pipeline, keyed by ``ctx.client`` (the server's own downlink encoding)."""
        x: Tensors = dict(update)
        mine = self._state.setdefault(ctx.client, {}) if state is None else state
        for t in self.transforms:
            x = t.encode(x, ctx, mine.setdefault(t.name, {}))
        return save({k: v.contiguous() for k, v in x.items()})

    def decode(self, payload: bytes, ctx: Context, template: Params | None) -> Params:
        """Server side: parse and invert; raise ``PayloadError`` with a reason on bad input.
        ``template`` is the layout the result must have (None: the caller checks it)."""
        try:
            x: Tensors = load(payload)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise PayloadError(f"payload is not a valid tensor archive: {exc}") from exc
        for t in reversed(self.transforms):
            x = t.decode(x, ctx)
        if template is None:
            return x
        if x.keys() == template.keys():
            x = {k: x[k] for k in template}
        why = Spec.of(template).describe_mismatch(Spec.of(x))
        if why is not None:
            raise PayloadError(f"decoded update does not match the model: {why}")
        return x

    # --- state kept in this pipeline (``encode`` without ``state``), saved with checkpoints -------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Flat ``client/transform/name -> tensor`` map for safetensors."""
        out: dict[str, torch.Tensor] = {}
        for cid, per in self._state.items():
            for tname, tensors in per.items():
                for k, v in tensors.items():
                    out[f"{cid}\x1f{tname}\x1f{k}"] = v.contiguous()
        return out

    def load_state_tensors(self, flat: dict[str, torch.Tensor]) -> None:
        self._state = {}
        for key, v in flat.items():
            cid, tname, k = key.split("\x1f")
            self._state.setdefault(cid, {}).setdefault(tname, {})[k] = v.clone()
