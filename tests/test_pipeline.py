"""The update pipeline seam: encode on the participant, decode at the server, bytes counted."""

from dataclasses import dataclass, field

import pytest
import torch

import fedforge as ff
from fedforge.transforms import Cast, Context, PayloadError, Pipeline
from tests.conftest import classifier_federation, make_server

CTX = Context(round=1, client="c0", seed=0)


def test_cast_halves_the_bytes_and_decodes_to_float32():
    p = Pipeline([Cast("float16")])
    upd = {"w": torch.randn(1000)}
    payload = p.encode(upd, CTX)
    back = p.decode(payload, CTX, upd)
    assert back["w"].dtype == torch.float32
    torch.testing.assert_close(back["w"], upd["w"], rtol=1e-3, atol=1e-3)
    raw = len(Pipeline().encode(upd, CTX))
    assert len(payload) < 0.55 * raw


def test_bytes_up_counts_the_encoded_payload():
    model, clients, central = classifier_federation()
    server = make_server(model, central, per_round=3, pipeline=Pipeline([Cast("bfloat16")]))
    history = server.run(clients, 2, progress=False)
    n_params = sum(v.numel() for v in server.params.values())
    # three payloads of 2 bytes per parameter plus small safetensors headers
    assert 3 * 2 * n_params < history.last["bytes_up"] < 3 * (2 * n_params + 1024)
    assert history.last["central_accuracy"] > 0.4


def test_corrupt_payload_is_refused_with_a_reason():
    p = Pipeline([Cast()])
    upd = {"w": torch.randn(10)}
    payload = p.encode(upd, CTX)
    with pytest.raises(PayloadError, match="not a valid"):
        p.decode(payload[: len(payload) // 2], CTX, upd)
    with pytest.raises(PayloadError, match="does not match the model"):
        p.decode(payload, CTX, {"w": torch.zeros(11)})


@dataclass(frozen=True)
class _Breaks:
    """Decodes to garbage shapes: the server must leave the update out, not crash."""

    name: str = "breaks"
    linear: bool = field(default=True)

    def encode(self, x, ctx, state):
        return x

    def decode(self, x, ctx):
        if ctx.client == "c1":
            return {k: v[:1] for k, v in x.items()}
        return x


def test_undecodable_update_is_left_out_and_round_goes_on():
    model, clients, central = classifier_federation()
    server = make_server(model, central, per_round=6, pipeline=Pipeline([_Breaks()]))
    history = server.run(clients, 1, progress=False)
    assert "undecodable" in history.last["rejected"]["c1"]
    assert history.last["aggregated"] == 5


@dataclass(frozen=True)
class _Counter:
    """Stateful: counts how often each participant encoded, in its private state."""

    name: str = "counter"
    linear: bool = True

    def encode(self, x, ctx, state):
        state["n"] = state.get("n", torch.zeros(())) + 1
        return x

    def decode(self, x, ctx):
        return x


def test_participant_state_survives_checkpoint_and_resume(tmp_path):
    def build():
        model, clients, central = classifier_federation()
        return make_server(model, central, per_round=3, pipeline=Pipeline([_Counter()])), clients

    full, clients = build()
    full.run(clients, 4, progress=False)
    cut, clients = build()
    cut.run(clients, 4, run_dir=tmp_path, progress=False, stop_after=2)
    resumed, clients = build()
    assert resumed.resume_from(ff.RunDir(tmp_path))
    resumed.run(clients, 4, run_dir=tmp_path, progress=False)
    assert set(full.participant_state()) == set(resumed.participant_state())
    for k, v in full.participant_state().items():
        assert torch.equal(v, resumed.participant_state()[k]), k


def test_bad_pipeline_configuration():
    with pytest.raises(ValueError, match="one of"):
        Cast("int8")
    with pytest.raises(ValueError, match="twice"):
        Pipeline([Cast(), Cast()])
