"""Models that are not built in: ``[model] name = "import"`` with a factory by import path,
and ``conv1d`` for sensor series (channels x time, as in the IoT example).

```toml
[model]
name = "import"
factory = "mypkg.nets:make_model"   # module:function, importable at the server and at every site
kwargs = { hidden = 64 }            # passed on, with input_shape and num_classes if it takes them
```

The federation ships a model's *name* and arguments, never its code: the module must be
installed (or on ``PYTHONPATH``) wherever the federation runs, which is what a site's
operator reviews before joining.
"""

from __future__ import annotations

import importlib
import inspect
import math
from typing import Any, Literal

from pydantic import Field, field_validator
from torch import Tensor, nn

from fedforge.components import ConfigError, Declaration, register

Shape = tuple[int, ...]


@register("model", "import")
class ImportedModel(Declaration):
    """``import``: ``factory(**kwargs, input_shape=..., num_classes=...)`` from a module."""

    name: Literal["import"] = "import"
    factory: str
    kwargs: dict[str, Any] = {}

    @field_validator("factory")
    @classmethod
    def _spelled(cls, v: str) -> str:
        mod, sep, fn = v.partition(":")
        if not sep or not mod or not fn.isidentifier():
            raise ValueError(
                f"model.factory: give MODULE:FUNCTION, e.g. mypkg.nets:make_model (got {v!r})"
            )
        return v

    def function(self) -> Any:
        mod, _, fn = self.factory.partition(":")
        try:
            module = importlib.import_module(mod)
        except ImportError as exc:
            raise ConfigError(
                f"model.factory {self.factory!r}: cannot import {mod!r} ({exc}); install it, or "
                "put its folder on PYTHONPATH, at the server and at every site"
            ) from None
        f = getattr(module, fn, None)
        if not callable(f):
            raise ConfigError(f"model.factory {self.factory!r}: {mod} has no function {fn!r}")
        return f

    def build(self, input_shape: Shape, num_classes: int | None) -> nn.Module:
        f = self.function()
        params = inspect.signature(f).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in params.values())
        given = dict(self.kwargs)
        for k, v in (("input_shape", input_shape), ("num_classes", num_classes)):
            if k in params or takes_all:
                given[k] = v
        try:
            model = f(**given)
        except TypeError as exc:
            raise ConfigError(f"model.factory {self.factory!r}: {exc}") from None
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"model.factory {self.factory!r} returned {type(model).__name__}, not a torch.nn.Module"
            )
        return model


class _Conv1d(nn.Module):
    def __init__(self, channels: int, length: int, width: int, classes: int) -> None:
        super().__init__()
        self.channels, self.length = channels, length
        self.body = nn.Sequential(
            nn.Conv1d(channels, width, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Conv1d(width, width, 5, padding=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool1d(1),
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: Tensor) -> Tensor:  # (batch, channels * length), channel-major
        x = x.reshape(x.shape[0], self.channels, self.length)
        return self.head(self.body(x).flatten(1))


@register("model", "conv1d")
class Conv1dModel(Declaration):
    """``conv1d``: two 1-D convolutions and global average pooling over a series of
    ``channels`` sensor channels; a flat input (a table's row) is read channel-major
    (``c0_t0, c0_t1, ..., c1_t0, ...``)."""

    name: Literal["conv1d"] = "conv1d"
    channels: int = Field(ge=1)
    width: int = Field(32, ge=1)

    def build(self, input_shape: Shape, num_classes: int | None) -> nn.Module:
        if num_classes is None:
            raise ConfigError("model.name: 'conv1d' is a classifier but the dataset is regression")
        n = math.prod(input_shape)
        if n % self.channels:
            raise ConfigError(
                f"model.channels = {self.channels} does not divide the input's {n} features"
            )
        return _Conv1d(self.channels, n // self.channels, self.width, num_classes)
