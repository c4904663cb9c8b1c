"""Loading through the Auto classes, with and without a PEFT adapter."""

from __future__ import annotations

import pytest
import torch

from text4seg.models import load_model_and_processor
from text4seg.models.loading import _resolve_dtype
from text4seg.models.registry import find_parts
from text4seg.models.tiny import build_tiny


def test_adapter_folder_loads_on_its_base(tmp_path):
    from peft import LoraConfig, get_peft_model

    model, processor = build_tiny("qwen2_5_vl")
    base = tmp_path / "base"
    model.save_pretrained(base)
    processor.save_pretrained(base)
    model.name_or_path = str(base)
    target = find_parts(model).lora_target_regex(model)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=target, init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = peft_model(input_ids=x).logits
        loaded, proc = load_model_and_processor(tmp_path / "adapter", dtype="float32")
        assert torch.allclose(loaded(input_ids=x).logits, expected, atol=1e-5)
        merged, _ = load_model_and_processor(base, adapter=tmp_path / "adapter", merge_adapter=True)
        assert not hasattr(merged, "peft_config")
        assert torch.allclose(merged(input_ids=x).logits, expected, atol=1e-5)
    assert proc.tokenizer.chat_template == processor.tokenizer.chat_template


def test_dtype_names():
    assert _resolve_dtype("bf16") is torch.bfloat16
    assert _resolve_dtype("auto") == "auto"
    with pytest.raises(ValueError, match="unknown dtype"):
        _resolve_dtype("bogus")


def test_tokenizer_only_folder_is_refused(tmp_path):
    _, processor = build_tiny("llava")
    processor.tokenizer.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a multimodal processor"):
        load_model_and_processor(tmp_path)
