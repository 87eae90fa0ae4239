"""A tiny randomly initialised Llama and a byte tokenizer: offline stand-ins for tests.

Nothing here downloads. ``byte_tokenizer()`` maps every UTF-8 byte to one
token (256 tokens, no merges) plus an end-of-text token, so any text
tokenizes and decodes back exactly. ``tiny_llama()`` builds a
``LlamaForCausalLM`` of a few hundred thousand parameters that trains in
milliseconds per step on a CPU, with the same module names as real Llama
models (``q_proj``, ``v_proj``, ...), so LoRA targets carry over unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["EOS_TOKEN", "byte_tokenizer", "tiny_llama"]

EOS_TOKEN = "<|endoftext|>"


def byte_tokenizer() -> Any:
    """A ``PreTrainedTokenizerFast`` with 257 tokens: 256 bytes, then ``EOS_TOKEN`` (id 256)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 printable stand-ins for bytes
    # Order by byte value so that token id == byte value.
    byte_to_char = _bytes_to_unicode()
    vocab = {byte_to_char[b]: b for b in range(256)}
    if set(vocab) != set(alphabet):
        raise RuntimeError("tokenizers' ByteLevel alphabet changed; update byte_tokenizer()")
    vocab[EOS_TOKEN] = 256
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([EOS_TOKEN])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (Radford et al. 2019)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    out = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in out:
            out[b] = chr(256 + n)
            n += 1
    return out


def tiny_llama(
    vocab_size: int = 257,
    hidden_size: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate_size: int = 64,
    seed: int = 0,
) -> Any:
    """A ``LlamaForCausalLM`` with random weights drawn from ``torch.Generator(seed)``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    return model
