"""Language-model federations from config: hospitals with their own instruction JSONL,
a tiny randomly initialised Llama, LoRA adapters the only tensors that travel; simulated
and deployed over mutual TLS alike; bad input refused before training."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from grpc_helpers import cli_env

from fedforge import config as C
from fedforge.experiment import build

pytest.importorskip("peft")

HOSPITALS = ("h_a", "h_b", "h_c")
WORDS = [
    "fever",
    "cough",
    "rash",
    "pain",
    "dose",
    "tablet",
    "rest",
    "water",
    "clinic",
    "nurse",
    "doctor",
    "triage",
]


def write_hospitals(folder: Path, tls: str | None = None, rounds: int = 2) -> Path:
    rng = random.Random(0)
    for h in HOSPITALS:
        with (folder / f"{h}.jsonl").open("w") as f:
            for i in range(24):
                q = " ".join(rng.choice(WORDS) for _ in range(4))
                advice = f"Advise {rng.choice(WORDS)} and {rng.choice(WORDS)}."
                if i % 3:
                    f.write(
                        json.dumps({"instruction": f"Patient reports {q}.", "response": advice})
                    )
                else:  # chat rows mix with pairs
                    msgs = [{"role": "user", "content": f"Patient reports {q}."},
                            {"role": "assistant", "content": advice}]  # fmt: skip
                    f.write(json.dumps({"messages": msgs}))
                f.write("\n")
        tls_line = f'certs = "{tls}"' if tls else "insecure = true"
        (folder / f"{h}.toml").write_text(
            f'id = "{h}"\n[data]\npath = "{h}.jsonl"\n[tls]\n{tls_line}\n'
        )
    fed = folder / "federation.toml"
    fed.write_text(
        f"""name = "hospitals"
[model]
name = "causal_lm"
source = "tiny"
[model.lora]
rank = 4
[data]
dataset = "instructions"
system = "You are a careful clinical assistant."
seq_len = 160
[client]
optimizer = "adamw"
lr = 0.01
steps = 3
batch_size = 4
[server]
rounds = {rounds}
[run]
dir = "{folder / "runs"}"
[federation]
sites = ["h_a.toml", "h_b.toml", "h_c.toml"]
"""
    )
    return fed


def test_a_hospital_federation_simulates_on_adapters_only(tmp_path: Path) -> None:
    sim = build(C.load(write_hospitals(tmp_path)))
    assert sorted(sim.clients) == list(HOSPITALS)
    assert all("lora_" in k for k in sim.server.params)  # only the adapter is the state
    history = list(sim.server.run(sim.clients, 2, backend=sim.backend, progress=False))
    import math

    for r in history:  # exp of the pooled token loss, not a mean of perplexities
        assert r["federated_perplexity"] == pytest.approx(math.exp(r["federated_loss"]))
    assert history[-1]["federated_loss"] < history[0]["federated_loss"]


def test_the_system_prompt_is_the_federations_and_replies_carry_the_loss(tmp_path: Path) -> None:
    from fedforge.data.files import read_table
    from fedforge.llm.federation import Instructions
    from fedforge.llm.text import IGNORE
    from fedforge.llm.tiny import byte_tokenizer

    write_hospitals(tmp_path)
    data = Instructions(system="You are a careful clinical assistant.", seq_len=160)
    tok = byte_tokenizer()
    blocks = data.blocks(read_table(tmp_path / "h_a.jsonl"), tok, 0, "h_a")
    first = tok.decode(blocks.train[0].tolist())
    assert "You are a careful clinical assistant." in first and "Shakespeare" not in first
    labelled = blocks.train_labels[0] != IGNORE  # type: ignore[index]
    reply = tok.decode(blocks.train[0][labelled].tolist())
    assert reply.startswith("Advise ") and "Patient" not in reply


def test_bad_language_model_input_is_refused_before_training(tmp_path: Path) -> None:
    fed = write_hospitals(tmp_path)
    with (tmp_path / "h_b.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "no instruction field", "response": "x"}) + "\n")
    with pytest.raises(C.ConfigError, match=r"h_b.jsonl line 25: needs text fields 'instruction'"):
        build(C.load(fed))
    fed = write_hospitals(tmp_path)
    with pytest.raises(C.ConfigError, match="model.lora.target_modules"):
        build(C.load(fed, ["model.lora.target_modules=[w_qkv]"]))
    with pytest.raises(C.ConfigError, match="needs a CUDA GPU"):
        build(C.load(fed, ["model.quantize=4bit", "model.device=cpu"]))
    with pytest.raises(C.ConfigError, match="no example keeps a reply token"):
        build(C.load(fed, ["data.seq_len=40"]))
    with pytest.raises(C.ConfigError, match="trains on token data"):
        C.load(fed, ["data={dataset: table, label: y}"])


def test_hospitals_over_mutual_tls_equal_the_simulation(tmp_path: Path) -> None:
    from grpc_helpers import read_port

    fed = write_hospitals(tmp_path, tls="certs")
    run = [sys.executable, "-m", "fedforge.cli"]
    out = subprocess.run(
        [*run, "certs", "certs", "--config", str(fed)], cwd=tmp_path, timeout=60, env=cli_env()
    )
    assert out.returncode == 0
    env = cli_env()
    logs = {n: open(tmp_path / f"{n}.log", "wb") for n in ("server", *HOSPITALS)}  # noqa: SIM115
    server = subprocess.Popen(
        [*run, "server", str(fed), "--certs", "certs", "--port-file", "port", "--no-progress"],
        cwd=tmp_path, stdout=logs["server"], stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    procs = []
    try:
        port = read_port(tmp_path / "port")
        for h in HOSPITALS:
            procs.append(subprocess.Popen(
                [*run, "client", "--site", f"{h}.toml", "--server", f"localhost:{port}"],
                cwd=tmp_path, stdout=logs[h], stderr=subprocess.STDOUT, env=env,
            ))  # fmt: skip
        codes = [server.wait(timeout=240)] + [p.wait(timeout=60) for p in procs]
    finally:
        for p in [server, *procs]:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0, 0, 0], (tmp_path / "server.log").read_text()[-3000:]
    run_dir = next((tmp_path / "runs").iterdir())
    deployed = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    sim = build(C.load(fed))
    simulated = list(sim.server.run(sim.clients, 2, backend=sim.backend, progress=False))
    for d, s in zip(deployed, simulated, strict=True):
        assert d["federated_loss"] == pytest.approx(s["federated_loss"], rel=1e-5)
        assert d.get("bytes_up") == s.get("bytes_up")  # the adapter, both ways
    assert deployed[0]["round"] == 0  # the model before training, evaluated the same way


def test_checkpoint_adapter_loads_in_peft_and_the_merged_export_generates(tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fedforge.llm.adapters import adapter_params, load_adapter
    from fedforge.llm.tiny import tiny_llama

    fed = write_hospitals(tmp_path)
    run = [sys.executable, "-m", "fedforge.cli"]
    out = subprocess.run(
        [*run, "simulate", str(fed), "--no-progress"], cwd=tmp_path, timeout=240, env=cli_env()
    )
    assert out.returncode == 0
    run_dir = next((tmp_path / "runs").iterdir())
    ckpt = sorted((run_dir / "checkpoints").iterdir())[-1]
    params = load_file(str(ckpt / "params.safetensors"))

    # the PEFT folder of the checkpoint holds the global adapter
    peft = PeftModel.from_pretrained(tiny_llama(seed=0), str(ckpt / "adapter"))
    got = adapter_params(peft, travelling_only=False)  # loaded for inference: none trains
    assert got.keys() == params.keys()
    assert all(torch.equal(got[k], params[k]) for k in params)

    # merged: the same predictions as base + adapter, loadable by transformers alone
    merged_dir = tmp_path / "merged"
    out = subprocess.run(
        [*run, "export", str(run_dir), "--merge", str(merged_dir)],
        cwd=tmp_path,
        timeout=120,
        env=cli_env(),
    )
    assert out.returncode == 0
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir))
    tok = AutoTokenizer.from_pretrained(str(merged_dir))
    ids = torch.tensor([tok.encode("Patient reports fever.")])
    load_adapter(peft, params)
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft(ids).logits, atol=1e-5)
        new = merged.generate(ids, max_new_tokens=5, do_sample=False)
    assert new.shape[1] == ids.shape[1] + 5
    again = subprocess.run(
        [*run, "export", str(run_dir), "--merge", str(merged_dir)],
        cwd=tmp_path, timeout=120, capture_output=True, text=True, env=cli_env())  # fmt: skip
    assert again.returncode == 2 and "never overwrites" in again.stderr


def test_generation_samples_each_round_in_the_run_directory(tmp_path: Path) -> None:
    fed = write_hospitals(tmp_path)
    sets = [
        "evaluation.prompts=['Patient reports fever.', 'Patient reports rash.']",
        "evaluation.max_new_tokens=12",
        "evaluation.temperature=0.8",
    ]
    texts = []
    for n in range(2):  # seeded sampling: the same words twice
        sim = build(C.load(fed, [*sets, f"run.dir={tmp_path / f'runs{n}'}"]))
        history = list(sim.server.run(sim.clients, 2, backend=sim.backend,
                                      run_dir=tmp_path / f"run{n}", progress=False))  # fmt: skip
        samples = [r["samples"] for r in history if "samples" in r]
        assert len(samples) == 2 and all(list(s) == ["Patient reports fever.",
                                                     "Patient reports rash."] for s in samples)  # fmt: skip
        texts.append(samples)
        md = (tmp_path / f"run{n}" / "samples.md").read_text()
        assert "## round 1" in md and "## round 2" in md and "**Patient reports rash.**" in md
    assert texts[0] == texts[1]
    assert any(s["Patient reports fever."] for s in texts[0])  # something was generated


def test_secure_aggregation_of_adapters_from_config(tmp_path: Path) -> None:
    """Token data's preprocessing reports only example counts (which the weights of a
    securely aggregated round carry anyway), so [secagg] composes with it: the masked
    rounds end where the plain ones do, to the fixed-point step."""
    import torch

    fed = write_hospitals(tmp_path)
    plain = build(C.load(fed))
    plain.server.run(plain.clients, 2, backend=plain.backend, progress=False)
    masked = build(C.load(fed, ["secagg={clip: 10.0}"]))
    masked.server.run(masked.clients, 2, backend=masked.backend, progress=False)
    for k, v in plain.server.params.items():
        assert torch.allclose(masked.server.params[k], v, atol=1e-5), k


def test_the_shakespeare_demo_config_and_its_comparison_run_small(tmp_path: Path) -> None:
    """configs/llm_shakespeare.toml (the README's `make demo`) on the tiny model, small:
    the simulation reports perplexity at round 0 and after the last round, and
    examples/llm_compare.py reads them back and trains the baselines on the same blocks."""
    import importlib.util

    sets = [
        "model.source=tiny", "data.roles=2", "data.seq_len=32", "data.max_train=8",
        "data.max_held_out=2", "server.rounds=3", "server.clients_per_round=2",
        "server.eval_every=3", "evaluation.max_new_tokens=4", f"run.dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    cfg = C.load(root / "configs" / "llm_shakespeare.toml", sets)
    sim = build(cfg)
    from fedforge.experiment import new_run_dir

    rd = new_run_dir(cfg)
    history = list(sim.server.run(sim.clients, 3, backend=sim.backend, run_dir=rd, progress=False))
    assert [r["round"] for r in history] == [0, 1, 2, 3]
    assert "central_perplexity" in history[0] and "central_perplexity" in history[-1]
    assert "samples" in history[-1]
    spec = importlib.util.spec_from_file_location(
        "llm_compare", root / "examples" / "llm_compare.py"
    )
    assert spec is not None and spec.loader is not None
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    result = compare.main([str(rd.path), "--threads", "1"])
    assert result["perplexity_federated"] == history[-1]["central_perplexity"]
    assert result["perplexity_before"] == history[0]["central_perplexity"]
    assert len(result["perplexity_local_only"]) == 2 and result["perplexity_centralized"] > 1
    assert 0 < result["bytes_fraction"] < 1
