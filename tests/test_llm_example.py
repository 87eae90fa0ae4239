"""The LLM Shakespeare example runs end to end, small, on a tiny model saved to a folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from fedforge.llm import byte_tokenizer, tiny_llama  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "llm_shakespeare.py"


@pytest.mark.parametrize(
    ("algorithm", "extra"),
    [
        ("fedsgd-adam", ["--server-lr", "0.03"]),
        ("fedavg", ["--server-lr", "2"]),
        ("fedsgd-adam", ["--server-lr", "0.03", "--task", "instruct", "--seq-len", "256"]),
    ],
)
def test_llm_shakespeare_example_small(tmp_path, capsys, algorithm, extra):
    tiny_llama(hidden_size=32, layers=2).save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    spec = importlib.util.spec_from_file_location("llm_shakespeare", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    before = torch.get_num_threads()
    try:
        result = module.main(
            [
                "--model",
                str(tmp_path),
                "--roles",
                "2",
                "--rounds",
                "2",
                "--local-steps",
                "2",
                "--seq-len",
                "32",
                "--train-blocks",
                "8",
                "--held-out-blocks",
                "2",
                "--threads",
                "1",
                "--lr",
                "0.03",
                "--algorithm",
                algorithm,
                *extra,
            ]
        )
    finally:
        torch.set_num_threads(before)
    out = capsys.readouterr().out
    assert "RESULT {" in out and "held-out perplexity" in out
    assert set(result["perplexity_local_only"]) and result["perplexity_centralized"] > 0
    assert result["perplexity_federated"] < result["perplexity_before"]
    assert result["bytes_fraction"] < 0.2  # tiny model: the adapter is a large share of it
    # the preset decided the optimizers; the explicit --server-lr and --rounds won
    want = {"fedsgd-adam": "fedadam", "fedavg": "fedavg"}[algorithm]
    assert result["algorithm"] == algorithm and result["server_optimizer"] == want
    assert result["rounds"] == 2
    task = "instruct" if "instruct" in extra else "lm"
    assert result["task"] == task
    if task == "instruct":  # the sample prompt is a chat-less instruction frame here
        assert "### Response:" in out and "reply tokens only" in out
