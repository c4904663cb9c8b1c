"""The registry of architecture facts: the table, parts, end-of-turn and stop tokens, prompt rendering."""

from __future__ import annotations

import pytest

from text4seg.models import registry
from text4seg.models.tiny import ARCHS, build_tiny

EXPECTED_END = {
    "qwen2_vl": "<|im_end|>",
    "qwen2_5_vl": "<|im_end|>",
    "qwen3_vl": "<|im_end|>",
    "llava": "</s>",  # the template ends a turn with a space only: EOS fallback
    "idefics3": "<end_of_utterance>",
    "smolvlm": "<end_of_utterance>",
    "paligemma": "<eos>",  # no chat template
    "gemma3": "<end_of_turn>",
    "internvl": "<|im_end|>",
}


@pytest.mark.parametrize("arch", ARCHS)
def test_parts_end_of_turn_and_prompt(arch):
    import torch

    model, processor = build_tiny(arch)
    parts = registry.find_parts(model)
    names = dict(model.named_modules())
    assert parts.language_model in names and parts.vision_tower and parts.projector
    assert names[parts.language_model].get_input_embeddings() is model.get_input_embeddings()
    for tower in parts.vision_tower:
        assert not tower.startswith(parts.language_model)
    # Every parameter is exactly one of: language model, vision tower (incl. its projector), projector, head.
    for name, _ in model.named_parameters():
        owners = [
            registry.in_parts(name, [parts.language_model]),
            registry.in_parts(name, parts.vision_tower),
        ]
        owners.append(registry.in_parts(name, parts.projector) and not owners[1])
        owners.append(parts.lm_head is not None and registry.in_parts(name, [parts.lm_head]))
        assert sum(owners) == 1, name
    # LoRA targets: every Linear of the language model and nothing else.
    import re

    pattern = re.compile(parts.lora_target_regex(model))
    for name, mod in names.items():
        if isinstance(mod, torch.nn.Linear):
            assert bool(pattern.fullmatch(name)) == name.startswith(parts.language_model + "."), name
    assert registry.end_of_turn(processor) == EXPECTED_END[arch]
    assert registry.end_of_turn_ids(processor)[0] == processor.tokenizer.convert_tokens_to_ids(
        EXPECTED_END[arch]
    )
    prompt = registry.render_prompt(processor, "Segment it.")
    assert "Segment it." in prompt
    assert registry.answer_token_type(model) == (1 if arch == "paligemma" else 0)
    # The table's facts agree with what the tiny build (made like the real checkpoints) shows.
    facts = registry.arch_facts(model, strict=True)
    assert facts is registry.ARCH_FACTS[arch] and facts.model_type == model.config.model_type == arch
    has_template = registry.has_chat_template(processor)
    assert facts.prompt_layout == ("chat_template" if has_template else "image_tokens_then_text")
    # Stop tokens: end of turn first, then the EOS ids of the tokenizer and of the generation config.
    tok = processor.tokenizer
    stops = registry.stop_token_ids(processor)
    assert stops == registry.end_of_turn_ids(processor)
    assert stops[0] == tok.convert_tokens_to_ids(EXPECTED_END[arch]) and tok.eos_token_id in stops
    assert len(set(stops)) == len(stops)
    assert (
        model.generation_config.eos_token_id == tok.eos_token_id
    )  # tiny builds: the config's EOS is the same
    assert registry.stop_token_ids(processor, model) == stops


def test_parts_of_a_nested_legacy_layout():
    """language_model.model.embed_tokens (decoder one level deeper) still yields the right three parts."""
    import re

    from torch import nn

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(10, 8)
            self.layers = nn.ModuleList(
                [nn.ModuleDict({"q_proj": nn.Linear(8, 8), "up_proj": nn.Linear(8, 16)})]
            )

    class CausalLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = Decoder()
            self.lm_head = nn.Linear(8, 10)

    class VLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_tower = nn.Sequential(nn.Linear(4, 6))
            self.mm_projector = nn.Linear(6, 8)
            self.language_model = CausalLM()

        def get_input_embeddings(self):
            return self.language_model.model.embed_tokens

        def get_output_embeddings(self):
            return self.language_model.lm_head

    model = VLM()
    parts = registry.find_parts(model)
    assert parts.language_model == "language_model"
    assert parts.vision_tower == ["vision_tower"] and parts.projector == ["mm_projector"]
    assert parts.lm_head == "language_model.lm_head"
    pattern = re.compile(parts.lora_target_regex(model))
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert sorted(n for n in linears if pattern.fullmatch(n)) == [
        "language_model.model.layers.0.q_proj",
        "language_model.model.layers.0.up_proj",
    ]


def test_arch_facts_lookup_table_and_fallback():
    from dataclasses import FrozenInstanceError

    assert set(ARCHS) <= set(registry.ARCH_FACTS)
    assert all(key == facts.model_type for key, facts in registry.ARCH_FACTS.items())
    assert registry.arch_facts("paligemma").answer_token_type == 1
    generic = registry.arch_facts("some_new_vlm")
    assert generic.model_type == "some_new_vlm"
    assert generic.answer_token_type == 0 and generic.prompt_layout == "chat_template"
    assert generic.vision_hints == registry.GENERIC.vision_hints
    with pytest.raises(registry.UnknownArchitectureError, match="'some_new_vlm'.*registered: qwen2_vl"):
        registry.arch_facts("some_new_vlm", strict=True)
    with pytest.raises(FrozenInstanceError):
        registry.ARCH_FACTS["llava"].answer_token_type = 1


def test_stop_token_ids_from_tokenizer_and_generation_config():
    from transformers import GenerationConfig

    from text4seg.models.tiny import build_tokenizer

    tok = build_tokenizer("gemma3")
    end, eos = tok.convert_tokens_to_ids("<end_of_turn>"), tok.eos_token_id
    assert registry.stop_token_ids(tok) == [end, eos]
    other = tok.convert_tokens_to_ids("<pad>")
    assert registry.stop_token_ids(tok, GenerationConfig(eos_token_id=[other, end])) == [end, other, eos]
    # No template and no EOS: the generation config alone, and an error when it names none either.
    bare = build_tokenizer("paligemma")
    bare.eos_token = None
    assert registry.stop_token_ids(bare, GenerationConfig(eos_token_id=other)) == [other]
    with pytest.raises(ValueError, match="no stop token"):
        registry.stop_token_ids(bare)
