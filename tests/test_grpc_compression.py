"""Uplink compression over gRPC: the participants encode, the socket carries the encoded
bytes, the server only decodes; the result is bit for bit the simulation's."""

from __future__ import annotations

import re

import pytest
import torch
from grpc_helpers import overrides, run_cli_federation

from fedforge import config as C
from fedforge.client.types import FitResult, RoundInfo
from fedforge.experiment import build
from fedforge.params import num_bytes
from fedforge.participant import UPLOAD, Plan, Stack, as_tensor, payload_of
from fedforge.transforms import (
    Cast,
    ErrorFeedback,
    LowRank,
    Pipeline,
    Quantize,
    RandomK,
    TopK,
    Zstd,
)
from fedforge.transport import uplink as up
from fedforge.transport.chunks import Payload
from fedforge.transport.registry import Registry

PIPELINES = {
    "quantize8+zstd": "[{kind: quantize, bits: 8}, {kind: zstd}]",
    "ef(topk0.1)+quantize8": (
        "[{kind: error_feedback, inner: [{kind: topk, fraction: 0.1}, {kind: quantize, bits: 8}]}]"
    ),
}
_STATS = re.compile(r"participant (\S+) finished: ParticipantStats\((.*)\)$", re.M)


@pytest.mark.parametrize("uplink", list(PIPELINES), ids=list(PIPELINES))
def test_participant_processes_encode_and_match_the_simulation(tmp_path, uplink):
    runs = tmp_path / "runs"
    sets = overrides(
        runs,
        "model.name=mlp",
        "model.hidden=[256]",
        "server.rounds=3",
        f"compression.uplink={PIPELINES[uplink]}",
    )
    run = run_cli_federation(sets, tmp_path, server_timeout=200)
    sim = build(C.validate(C.apply_overrides({}, sets)))
    history = sim.server.run(sim.clients, 3, progress=False)
    for k, v in sim.server.params.items():
        assert torch.equal(run.params[k], v), (k, (run.params[k] - v).abs().max())

    records = run.records
    assert [r["bytes_up"] for r in records] == [r["bytes_up"] for r in history]
    assert all(r["aggregated"] == 5 for r in records)
    # What the participants pushed: the tensor bytes of every fit result (the encoded
    # payload, one uint8 tensor), framing (protobuf headers, chunk frames, the SHA-256
    # trailer, HTTP/2) not counted; the same bytes the history counts as bytes_up.
    pushed: dict[str, int] = {}
    for i in range(2):
        for cid, body in _STATS.findall((tmp_path / f"client{i}.log").read_text()):
            fields = dict(re.findall(r"(\w+)=(\d+)", body))
            pushed[cid] = int(fields["bytes_up"])
            assert "finished='training finished'" in body, body
    assert len(pushed) == 10
    assert sum(pushed.values()) == sum(r["bytes_up"] for r in records)
    float32 = num_bytes(sim.server.params) * sum(r["aggregated"] for r in records)
    assert 4 * sum(r["bytes_up"] for r in records) < float32  # at least 4x under float32
    log = (tmp_path / "server.log").read_text()
    ups = [int(m) for m in re.findall(r"round \d+ fit: .* up (\d+),", log)]
    assert ups == [r["bytes_up"] for r in records]  # the socket's tensor bytes, per round


def test_pipeline_spec_round_trips():
    pipes = [
        Pipeline([Quantize(8), Zstd(5)]),
        Pipeline([ErrorFeedback(TopK(0.1), Quantize(4, block=64))]),
        Pipeline([RandomK(0.2, unbiased=True, shared=True), Cast("bfloat16")]),
        Pipeline([LowRank(2, oversample=3, power_iters=1)]),
    ]
    for p in pipes:
        back = up.parse(up.spec(p))
        assert repr(back.transforms) == repr(p.transforms)
        assert up.spec(back) == up.spec(p)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",
        '[{"kind": "pickle"}]',
        '[{"kind": "quantize", "bits": 8, "evil": 1}]',
        '[{"kind": "quantize", "bits": [8]}]',
        '[{"kind": "error_feedback", "inner": [{"kind": "error_feedback", "inner": []}]}]',
        '[{"kind": "quantize", "bits": 99}]',
    ],
)
def test_bad_pipeline_specs_are_refused(text):
    with pytest.raises(up.SpecError):
        up.parse(text)


def test_a_rebuilt_stack_encodes_as_the_simulation_and_keeps_its_state():
    """A stack rebuilt from the wire description gives the bytes the simulation's stack
    gives, round after round, each participant with its own error-feedback residual."""
    pipe = Pipeline([ErrorFeedback(TopK(0.1)), Quantize(8)])
    rebuilt = up.rebuild(up.describe(Plan(pipe)))
    here = {cid: Stack(cid, _Fixed(), Plan(pipe)) for cid in ("a", "b")}
    there = {cid: Stack(cid, _Fixed(), rebuilt) for cid in ("a", "b")}
    for r in (1, 2, 3):
        for cid in ("a", "b"):
            info = RoundInfo(r, 0, uplink_seed=1000 * r + ord(cid), round_seed=r)
            params = {"w": torch.full((50,), float(r))}
            want = here[cid].fit(params, info).update[UPLOAD]
            assert torch.equal(there[cid].fit(params, info).update[UPLOAD], want)
    assert set(there["a"].state_tensors()) == set(here["a"].state_tensors())
    assert any("residual" in k for k in here["a"].state_tensors())
    assert not torch.equal(
        here["a"].state_tensors()[next(iter(here["a"].state_tensors()))],
        here["b"].state_tensors()[next(iter(here["b"].state_tensors()))],
    )


class _Fixed:
    """A participant whose update is a fixed function of the params and its seed."""

    def fit(self, params, info):
        g = torch.Generator().manual_seed(info.uplink_seed)
        return FitResult({k: torch.randn(v.shape, generator=g) for k, v in params.items()}, 5)

    def evaluate(self, params, info):
        raise NotImplementedError


def test_finish_keeps_the_first_reason():
    reg = Registry(["a"])
    s = reg.join("a")
    reg.attach(s)
    reg.finish("training finished")
    reg.finish("server stopped")
    assert reg.finished == "training finished"
    assert s.closed == "training finished"
    # a task submitted now is refused, and the session's channel ends
    t = reg.submit("a", "fit", RoundInfo(1, 0, {}), Payload({}))
    assert t.done


def test_encoded_payload_tensor_round_trips():
    data = b"\x00\x01abc\xff"
    assert payload_of({UPLOAD: as_tensor(data)}) == data
    assert as_tensor(b"").numel() == 0
    with pytest.raises(ValueError, match="one 1-D uint8 tensor"):
        payload_of({"w": torch.zeros(3)})


def test_server_decodes_what_the_participant_encoded():
    """``Server._receive`` on a stack's upload gives the update the stack encoded, counts the
    encoded bytes, and leaves a corrupt or bad upload out with the reason."""
    import fedforge as ff

    params = {"w": torch.zeros(40), "b": torch.zeros(3)}
    update = {"w": torch.linspace(-1, 1, 40), "b": torch.tensor([0.5, -0.25, 2.0])}
    pipe = Pipeline([ErrorFeedback(TopK(0.5)), Quantize(8), Zstd()])
    server = ff.Server(params, sampler=ff.Sampler(per_round=1, seed=0), pipeline=pipe, seed=3)
    ctx = server.transform_context(1, "c")
    data = pipe.encode(update, ctx, {})
    want = pipe.decode(data, ctx, params)
    got, n, why = server._receive(1, "c", FitResult({UPLOAD: as_tensor(data)}, 7, {}))
    assert why is None and n == len(data)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert server.participant_state() == {}  # the residual stays with the participant
    _, _, why = server._receive(1, "c", FitResult({UPLOAD: as_tensor(data[:-3])}, 7, {}))
    assert why is not None and why.startswith("undecodable update")
    _, _, why = server._receive(1, "c", FitResult({UPLOAD: as_tensor(data)}, 0, {}))
    assert why is not None and "num_examples" in why
    _, _, why = server._receive(1, "c", FitResult(update, 7, {}))  # not encoded at all
    assert why is not None and why.startswith("undecodable update")
