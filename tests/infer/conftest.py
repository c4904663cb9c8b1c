"""Shared fixtures for the inference tests: a trained tiny BPE, a tiny text-only LM and a tiny VLM."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def tokenizer():
    """The tiny models' byte-level BPE (trained on descriptor-like text), with a chat template."""
    from text4seg.models.tiny import build_tokenizer

    return build_tokenizer("qwen2_vl")


@pytest.fixture(scope="session")
def text_model(tokenizer):
    """A random-initialised 2-layer Llama over that tokenizer: fast, and random weights wander widely."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="session")
def tiny_vlm():
    """A random tiny Qwen2-VL `(model, processor)` (32 px images)."""
    from text4seg.models.tiny import build_tiny

    return build_tiny("qwen2_vl", seed=0)
