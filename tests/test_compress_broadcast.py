"""Downlink: one reference chain, deltas where smaller, participants bit-identical to it."""

import pytest
import torch

from fedforge.transforms import Broadcast, Pipeline, Quantize, TopK, Zstd


def _models(n: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    p = {"w": torch.randn(100, 50, generator=g), "b": torch.randn(50, generator=g)}
    out = []
    for _ in range(n):
        p = {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in p.items()}
        out.append(p)
    return out


def test_lossless_downlink_first_full_then_deltas_and_exact_replicas():
    b = Broadcast(Pipeline())  # float32 deltas: same size as the model, so always full
    m0, m1 = _models(2)
    b.publish(m0, 0)
    first = b.send("a")
    assert first.full is not None and first.deltas == ()
    held = b.receive(first, None, m0)
    assert all(torch.equal(held[k], m0[k]) for k in m0)
    assert b.send("a").nbytes == 0  # it already holds version 0
    b.publish(m1, 1)
    msg = b.send("a")
    assert msg.full is not None  # a float32 delta is not smaller than the model
    held = b.receive(msg, held, m0)
    torch.testing.assert_close(held, m1)


def test_compressed_deltas_are_smaller_and_every_participant_matches_the_reference():
    b = Broadcast(Pipeline([TopK(0.05), Quantize(8), Zstd()]), keep=3)
    models = _models(8)
    b.publish(models[0], 0)
    full_size = b.send("a").nbytes
    held = {"a": b.receive(b.send("z"), None, models[0])}
    held["b"] = held["a"]
    for v in range(1, 8):
        ref = b.publish(models[v], v)
        if v % 2 == 0 or v == 7:  # "a" every other round; "b" only at the end
            for cid in ("a", "b") if v == 7 else ("a",):
                msg = b.send(cid)
                held[cid] = b.receive(msg, held[cid], models[0])
                assert all(torch.equal(held[cid][k], ref[k]) for k in ref), (cid, v)
                if cid == "a":  # two deltas of 5 % in 8 bits, far below float32
                    assert msg.full is None and len(msg.deltas) in (1, 2)
                    assert msg.nbytes < full_size / 4
                else:  # "b" last held version 0: its chain left the last keep=3
                    assert msg.full is not None
    # The reference lags the server model a little; the next delta carries what was dropped.
    err = float((b.reference["w"] - models[7]["w"]).abs().max())
    assert 0 < err < 0.1


def test_state_survives_a_checkpoint():
    pipe = Pipeline([TopK(0.1), Quantize(4)])
    a, c = Broadcast(pipe, keep=2), Broadcast(Pipeline([TopK(0.1), Quantize(4)]), keep=2)
    models = _models(4)
    for v in range(3):
        a.publish(models[v], v)
        a.send("p")
    c.load_state_tensors(a.state_tensors())
    a.publish(models[3], 3)
    c.publish(models[3], 3)
    ma, mc = a.send("p"), c.send("p")
    assert ma.deltas == mc.deltas and ma.full == mc.full
    assert all(torch.equal(a.reference[k], c.reference[k]) for k in a.reference)


def test_misuse_is_refused():
    b = Broadcast(Pipeline())
    with pytest.raises(RuntimeError, match="before publish"):
        b.send("a")
    b.publish(_models(1)[0], 3)
    with pytest.raises(ValueError, match="older"):
        b.publish(_models(1)[0], 2)
    with pytest.raises(ValueError, match="keep"):
        Broadcast(Pipeline(), keep=-1)
