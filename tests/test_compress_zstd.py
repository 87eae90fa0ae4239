"""The lossless last stage, and bad payloads at the server: refused, left out, round goes on."""

import contextlib

import pytest
import torch
import zstandard
from safetensors.torch import load, save

from fedforge.transforms import Context, ErrorFeedback, PayloadError, Pipeline, Quantize, TopK, Zstd
from tests.conftest import classifier_federation, make_server

CTX = Context(round=1, client="c0", seed=0)


def test_round_trip_is_exact_and_shrinks_redundant_payloads():
    x = {"w": torch.zeros(10_000), "n": torch.tensor([1, 2, 3])}
    p = Pipeline([Zstd()])
    payload = p.encode(x, CTX)
    y = p.decode(payload, CTX, x)
    assert torch.equal(y["w"], x["w"]) and torch.equal(y["n"], x["n"])
    assert len(payload) < 500 < 40_000 < len(Pipeline().encode(x, CTX))


def test_zstd_after_topk_and_8_bit_is_over_100x_smaller_than_float32():
    x = {"w": torch.randn(200_000)}
    raw = len(Pipeline().encode(x, CTX))
    small = len(Pipeline([ErrorFeedback(TopK(0.01), Quantize(8)), Zstd()]).encode(x, CTX))
    assert raw / small > 100, raw / small


def _blob(z: Zstd, x: dict) -> bytes:
    return z.encode(x, CTX, {})["#zstd"].numpy().tobytes()


def _as_tensor(b: bytes) -> dict:
    return {"#zstd": torch.frombuffer(bytearray(b), dtype=torch.uint8)}


def test_bad_frames_raise_payload_error_with_a_reason():
    z = Zstd()
    blob = _blob(z, {"w": torch.randn(1000)})
    with pytest.raises(PayloadError, match="truncated|corrupt"):
        z.decode(_as_tensor(blob[:-10]), CTX)
    with pytest.raises(PayloadError, match="not a zstd frame"):
        z.decode(_as_tensor(b"hello, not zstd"), CTX)
    with pytest.raises(PayloadError, match="garbage after"):
        z.decode(_as_tensor(blob + b"xyz"), CTX)
    with pytest.raises(PayloadError, match="only the tensor"):
        z.decode({**_as_tensor(blob), "extra": torch.zeros(1)}, CTX)
    with pytest.raises(PayloadError, match="archive is not valid"):
        z.decode(_as_tensor(zstandard.ZstdCompressor().compress(b"not safetensors")), CTX)
    bomb = Zstd(max_bytes=1000)
    with pytest.raises(PayloadError, match="would decompress to"):
        bomb.decode(_as_tensor(blob), CTX)
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 0xFF
    # A flipped byte inside the compressed data is detected, or decodes to other numbers
    # (zstd frames here carry no checksum); either way nothing but PayloadError escapes.
    with contextlib.suppress(PayloadError):
        z.decode(_as_tensor(bytes(flipped)), CTX)


@pytest.mark.parametrize("level", [0, 23, 2.0])
def test_bad_level_is_refused_naming_the_argument(level):
    with pytest.raises(ValueError, match="level"):
        Zstd(level)


class _Wire(Pipeline):
    """Corrupts participant c1's bytes in transit: the last 20 compressed bytes go missing."""

    def encode(self, update, ctx, state=None):
        payload = super().encode(update, ctx, state)
        if ctx.client != "c1":
            return payload
        x = load(payload)
        x["#zstd"] = x["#zstd"][:-20].clone()
        return save(x)


def test_server_leaves_a_corrupt_update_out_and_the_round_goes_on():
    model, clients, central = classifier_federation()
    pipe = _Wire([ErrorFeedback(TopK(0.2), Quantize(4)), Zstd()])
    server = make_server(model, central, per_round=6, pipeline=pipe)
    history = server.run(clients, 2, progress=False)
    assert "undecodable update" in history.last["rejected"]["c1"]
    assert "zstd" in history.last["rejected"]["c1"]
    assert history.last["aggregated"] == 5
    assert history.last["central_accuracy"] > 0.4
