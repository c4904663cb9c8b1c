"""Tiny offline models: every architecture builds, runs, saves and reloads through the Auto classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from text4seg.models import registry
from text4seg.models.tiny import ARCHS, _trained_tokenizer_json, build_tiny, build_tokenizer, count_parameters


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8))


def _inputs(processor):
    prompt = registry.render_prompt(processor, "Please segment the red circle.")
    enc = processor(
        text=[prompt],
        images=[[_image()]],
        return_tensors="pt",
        add_special_tokens=registry.add_special_tokens_for(processor, prompt),
    )
    enc.pop("labels", None)
    return enc


@pytest.mark.parametrize("arch", ARCHS)
def test_build_save_reload(arch, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = build_tiny(arch)
    assert count_parameters(model) < 400_000
    enc = _inputs(processor)
    with torch.no_grad():
        logits = model(**enc).logits
    assert torch.isfinite(logits).all()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    model2 = AutoModelForImageTextToText.from_pretrained(tmp_path)
    processor2 = AutoProcessor.from_pretrained(tmp_path)
    assert type(processor2) is type(processor)
    enc2 = _inputs(processor2)
    assert torch.equal(enc2["input_ids"], enc["input_ids"])
    with torch.no_grad():
        assert torch.allclose(model2(**enc2).logits, logits, atol=1e-5)


def test_build_is_deterministic_and_overridable():
    a, _ = build_tiny("llava", seed=3)
    b, _ = build_tiny("llava", seed=3, num_layers=1, text_config={"intermediate_size": 32})
    c, _ = build_tiny("llava", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))
    assert b.config.text_config.num_hidden_layers == 1
    assert b.config.text_config.intermediate_size == 32


def test_tokenizer_is_cached_and_compact_on_descriptors():
    assert _trained_tokenizer_json() is _trained_tokenizer_json()
    tok = build_tokenizer("qwen2_vl")
    row = "others *16\n others *5| red circle *3| others *8\n"
    ids = tok(row, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == row
    assert len(ids) <= 20  # one token per label word, count and separator


def test_unknown_arch_and_bad_image_size():
    with pytest.raises(ValueError, match="unknown tiny architecture"):
        build_tiny("nope")
    with pytest.raises(ValueError, match="multiple"):
        build_tiny("llava", image_size=40)


def test_builder_table_has_one_builder_per_family():
    from text4seg.models.tiny import TINY_BUILDERS

    assert ARCHS == tuple(TINY_BUILDERS)
    builders = {entry.build.__name__ for entry in TINY_BUILDERS.values()}
    assert builders == {"_qwen", "_llava", "_idefics3", "_paligemma", "_gemma3", "_internvl"}
    for arch, entry in TINY_BUILDERS.items():
        tok = build_tokenizer(arch)
        assert tok.eos_token == entry.tokens.eos
        assert (tok.chat_template is None) == (entry.tokens.chat_template is None)
        for role, token in entry.tokens.extra.items():
            assert getattr(tok, role) == token
