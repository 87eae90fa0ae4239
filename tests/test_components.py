"""One declaration per component: config, builder and wire all go through the registry."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Annotated

import pytest
import torch
from pydantic import Field

from fedforge import components
from fedforge import config as C
from fedforge.components import register
from fedforge.experiment import aggregator, build_pipeline, server_optimizer
from fedforge.participant import Plan
from fedforge.transforms import Context, ErrorFeedback, Pipeline, TopK
from fedforge.transport import uplink as up

FAMILIES = ("transform", "aggregator", "server_optimizer", "algorithm", "dataset", "model")


def _declared(family: components.Family) -> list[str]:
    return [k for k in components.kinds(family) if components.get(family, k).runtime]


def test_the_families_are_populated():
    for family in FAMILIES:
        assert components.kinds(family), family


@pytest.mark.parametrize("family", ["transform", "algorithm"])
def test_every_wire_kind_round_trips_declaration_object_json_object(family):
    for kind in _declared(family):
        decl = components.get(family, kind)
        required = {
            "clip": 1.0,
            "noise_multiplier": 0.5,
            "local_lr": 0.1,
            "inner": [{"kind": "topk"}, {"kind": "quantize", "bits": 4}],
        }
        doc = {k: v for k, v in required.items() if k in decl.model_fields}
        obj = decl.model_validate(doc).build()
        wire = components.describe(family, obj).model_dump_json()
        back = decl.model_validate_json(wire, strict=True).build()
        assert repr(back) == repr(obj), kind  # ErrorFeedback compares by identity


def test_every_aggregator_and_optimizer_builds_and_describes_back():
    for family in ("aggregator", "server_optimizer"):
        for kind in components.kinds(family):
            obj = components.get(family, kind)().build()
            assert components.describe(family, obj).build() == obj


def test_error_feedback_nests_on_the_wire():
    plan = Plan(Pipeline([ErrorFeedback(TopK(0.1))]))
    doc = json.loads(up.describe(plan))
    assert doc["uplink"] == [
        {"kind": "error_feedback", "inner": [{"kind": "topk", "fraction": 0.1}]}
    ]
    assert repr(up.rebuild(up.describe(plan)).uplink.transforms) == repr(plan.uplink.transforms)


def test_config_defaults_are_the_runtime_defaults():
    """The declaration is derived from the runtime class: one set of defaults."""
    cfg = C.validate({"compression": {"uplink": [{"kind": "topk"}, {"kind": "zstd"}]}})
    assert [t.build() for t in cfg.compression.uplink] == [
        TopK(),
        *build_pipeline([components.get("transform", "zstd")()], "x").transforms,
    ]
    assert (
        aggregator(cfg.server.aggregator) == components.get("aggregator", "weighted_mean")().build()
    )
    assert server_optimizer(cfg.server.optimizer).lr == 1.0


def test_unknown_kinds_name_the_registered_ones():
    with pytest.raises(C.ConfigError) as err:
        C.validate({"compression": {"uplink": [{"kind": "gzip"}]}})
    for kind in components.kinds("transform", in_config=True):
        assert repr(kind) in str(err.value)
    with pytest.raises(up.SpecError, match="'quantize'"):
        up.parse('[{"kind": "gzip"}]')
    with pytest.raises(up.SpecError, match="allowed: kind, bits, block"):
        up.parse('[{"kind": "quantize", "bitz": 4}]')
    with pytest.raises(C.ConfigError, match="allowed: fedavg, fednova, scaffold"):
        C.validate({"server": {"algorithm": "fedprox"}})
    with pytest.raises(components.UnknownKind, match="fedadam, fedavg"):
        components.get("server_optimizer", "sgd")


def test_wire_only_kinds_stay_out_of_the_config():
    assert "local_dp" in up.kinds() and "flora" in up.algorithms()
    with pytest.raises(C.ConfigError, match="local_dp"):
        C.validate({"compression": {"uplink": [{"kind": "local_dp", "clip": 1.0}]}})
    with pytest.raises(C.ConfigError, match="flora"):
        C.validate({"server": {"algorithm": "flora"}})


@dataclass(frozen=True)
class Scale:
    """A toy transform: multiply by ``factor`` on the way out, divide on the way in."""

    factor: Annotated[float, Field(gt=0)] = 2.0
    linear: bool = field(default=True, init=False)

    @property
    def name(self) -> str:
        return f"scale{self.factor}"

    def encode(self, x, ctx, state):
        return {k: v * self.factor for k, v in x.items()}

    def decode(self, x, ctx):
        return {k: v / self.factor for k, v in x.items()}


@pytest.fixture
def scale_declared():
    register("transform", "scale")(Scale)
    yield
    components.unregister("transform", "scale")


def test_a_kind_registered_once_is_in_config_builder_and_wire(scale_declared):
    cfg = C.validate({"compression": {"uplink": [{"kind": "scale", "factor": 4.0}]}})
    pipe = build_pipeline(cfg.compression.uplink, "compression.uplink")
    assert pipe.transforms == (Scale(4.0),) or list(pipe.transforms) == [Scale(4.0)]
    x = {"w": torch.tensor([1.0, 2.0, 3.0])}
    ctx = Context(round=1, client="a", seed=0)
    assert torch.equal(pipe.transforms[0].encode(x, ctx, {})["w"], torch.tensor([4.0, 8.0, 12.0]))
    assert json.loads(up.spec(pipe)) == [{"kind": "scale", "factor": 4.0}]
    assert list(up.parse(up.spec(pipe)).transforms) == [Scale(4.0)]
    with pytest.raises(C.ConfigError, match=r"compression.uplink.0.scale.factor"):
        C.validate({"compression": {"uplink": [{"kind": "scale", "factor": 0}]}})
    with pytest.raises(C.ConfigError, match="compression.uplink.0.scale.facter: unknown key"):
        C.validate({"compression": {"uplink": [{"kind": "scale", "facter": 1}]}})


def test_after_unregistering_the_kind_is_refused_again(scale_declared):
    components.unregister("transform", "scale")
    try:
        with pytest.raises(C.ConfigError, match="scale"):
            C.validate({"compression": {"uplink": [{"kind": "scale"}]}})
        with pytest.raises(up.SpecError):
            up.parse('[{"kind": "scale", "factor": 2.0}]')
    finally:
        register("transform", "scale")(Scale)


def test_registering_does_not_import_the_heavy_extras():
    import subprocess
    import sys

    code = "import sys, fedforge.transport.uplink, fedforge.config; print('peft' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
