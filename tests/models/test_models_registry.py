"""Architecture facts found from structure: parts, end-of-turn token, prompt rendering."""

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
