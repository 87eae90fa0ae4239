"""Error feedback: nothing is lost, only delayed; the residual survives a resume."""

import pytest
import torch

from fedforge.server import checkpoint as ckpts
from fedforge.transforms import (
    Cast,
    Context,
    ErrorFeedback,
    Pipeline,
    Quantize,
    RandomK,
    TopK,
    Zstd,
)
from tests.conftest import classifier_federation, make_server


def test_by_hand_top1_of_two():
    ef = ErrorFeedback(TopK(0.5))
    state: dict = {}
    ctx = Context(1, "c0", 0)
    # round 1: [3, 1] -> sends [3, 0], keeps [0, 1]
    sent = ef.decode(ef.encode({"w": torch.tensor([3.0, 1.0])}, ctx, state), ctx)
    assert sent["w"].tolist() == [3.0, 0.0] and ef.residual(state)["w"].tolist() == [0.0, 1.0]
    # round 2: [0, 0.5] + [0, 1] = [0, 1.5] -> sends it all, keeps nothing
    sent = ef.decode(ef.encode({"w": torch.tensor([0.0, 0.5])}, ctx, state), ctx)
    assert sent["w"].tolist() == [0.0, 1.5] and ef.residual(state)["w"].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    "inner",
    [(TopK(0.01),), (TopK(0.05), Quantize(4, block=64)), (RandomK(0.1),), (Quantize(2, block=8),)],
    ids=lambda t: "+".join(x.name for x in t),
)
def test_transmitted_plus_final_residual_equals_raw_sum(inner):
    p = Pipeline([ErrorFeedback(*inner), Zstd()])
    g = torch.Generator().manual_seed(0)
    raw = {"w": torch.zeros(30, 20), "b": torch.zeros(20)}
    got = {k: torch.zeros_like(v) for k, v in raw.items()}
    for r in range(1, 21):
        upd = {k: torch.randn(v.shape, generator=g) for k, v in raw.items()}
        ctx = Context(r, "c0", r)
        back = p.decode(p.encode(upd, ctx), ctx, upd)
        for k in raw:
            raw[k] += upd[k]
            got[k] += back[k]
    residual = p.transforms[0].residual(p._state["c0"][p.transforms[0].name])
    for k in raw:
        torch.testing.assert_close(got[k] + residual[k], raw[k], rtol=0, atol=1e-4)
    assert float(residual["w"].abs().sum()) > 0  # something was actually held back


def test_integer_tensors_pass_and_keep_no_residual():
    ef, state = ErrorFeedback(TopK(0.5)), {}
    ctx = Context(1, "c0", 0)
    out = ef.decode(ef.encode({"w": torch.ones(4), "n": torch.tensor([3, 4])}, ctx, state), ctx)
    assert out["n"].tolist() == [3, 4] and set(ef.residual(state)) == {"w"}


def test_names_linearity_and_bad_arguments():
    assert ErrorFeedback(TopK(0.01), Quantize(8)).name == "ef[topk0.01+quantize8]"
    assert ErrorFeedback(RandomK(0.1)).linear and not ErrorFeedback(TopK(0.1)).linear
    with pytest.raises(ValueError, match="inner"):
        ErrorFeedback()
    with pytest.raises(ValueError, match="another error feedback"):
        ErrorFeedback(ErrorFeedback(TopK()))
    with pytest.raises(ValueError, match="sparsify before quantizing"):
        ErrorFeedback(Cast(), TopK())


def test_residual_state_after_resume_equals_the_uninterrupted_one(tmp_path):
    # Through a checkpoint on disk (the server's own save/load), without a RunDir's plots.
    def build():
        model, clients, central = classifier_federation()
        pipe = Pipeline([ErrorFeedback(TopK(0.1), Quantize(4)), Zstd()])
        return make_server(model, central, per_round=3, pipeline=pipe), clients

    full, clients = build()
    full.run(clients, 4, progress=False)
    cut, clients = build()
    cut.run(clients, 2, progress=False)
    saved = ckpts.save(tmp_path, cut.checkpoint())
    resumed, clients = build()
    resumed.restore(ckpts.load(saved, expected=resumed.params))
    resumed.run(clients, 4, progress=False)
    want, got = full.participant_state(), resumed.participant_state()
    assert any("residual/" in k for k in want)
    assert set(want) == set(got)
    for k, v in want.items():
        assert torch.equal(v, got[k]), k
    for k, v in full.params.items():
        assert torch.equal(v, resumed.params[k]), k
