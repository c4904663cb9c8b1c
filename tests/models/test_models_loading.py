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


# -- adapters saved under transformers' older module layout -----------------------------------------
# LLaVA before transformers 4.52 (Text4Seg's llava-hf adapters, saved by ms-swift with PEFT): the language
# model at `language_model.model.`, the tower and projector at the top. Measured on transformers 5.24 +
# PEFT 0.21: plain `PeftModel.from_pretrained` remaps the language model's keys but drops the tower's and
# projector's (28 of 56 tensors of the tiny LLaVA adapter, with only a warning), and fails outright on
# ms-swift's regex target_modules.
OLD_LLAVA = (
    ("model.language_model.", "language_model.model."),
    ("model.vision_tower.", "vision_tower."),
    ("model.multi_modal_projector.", "multi_modal_projector."),
)
LEAVES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LEAVES += ["out_proj", "fc1", "fc2", "linear_1", "linear_2"]  # CLIP tower and projector
SWIFT_REGEX = r"^(language_model|multi_modal_projector)(?!.*(lm_head|output|emb|wte|shared)).*"


def _old_key(key: str) -> str:
    for new, old in OLD_LLAVA:
        if key.startswith("base_model.model." + new):
            return key.replace("base_model.model." + new, "base_model.model." + old, 1)
    return key


@pytest.fixture(scope="module")
def llava_adapter(tmp_path_factory):
    """A tiny LLaVA base folder and a LoRA adapter on every Linear, saved in today's layout."""
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict

    root = tmp_path_factory.mktemp("llava_adapter")
    model, processor = build_tiny("llava")
    model.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=LEAVES, init_lora_weights=False))
    peft_model.save_pretrained(root / "new")
    return root, get_peft_model_state_dict(peft_model)


def _write_old(root, saved, targets) -> object:
    import json

    from safetensors.torch import save_file

    folder = root / f"old_{len(str(targets))}"
    folder.mkdir(exist_ok=True)
    save_file({_old_key(k): v.contiguous() for k, v in saved.items()}, folder / "adapter_model.safetensors")
    config = json.loads((root / "new" / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "target_modules": targets}))
    return folder


@pytest.mark.parametrize("targets", [LEAVES, SWIFT_REGEX], ids=["leaf-names", "ms-swift-regex"])
def test_old_layout_llava_adapter_loads_every_lora_tensor(llava_adapter, targets):
    from peft.utils import get_peft_model_state_dict

    root, saved = llava_adapter
    old = _write_old(root, saved, targets)
    assert any(k.startswith("base_model.model.vision_tower.") for k in _saved_keys(old))
    model, _ = load_model_and_processor(root / "base", adapter=old, dtype="float32")
    loaded = get_peft_model_state_dict(model)
    assert sorted(loaded) == sorted(saved)
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())


def _saved_keys(folder):
    from text4seg.models.loading import saved_adapter_keys

    return saved_adapter_keys(folder)


def test_todays_layout_loads_unchanged(llava_adapter):
    from peft.utils import get_peft_model_state_dict

    root, saved = llava_adapter
    model, _ = load_model_and_processor(root / "base", adapter=root / "new", dtype="float32")
    loaded = get_peft_model_state_dict(model)
    assert sorted(loaded) == sorted(saved) and all(torch.equal(loaded[k], v) for k, v in saved.items())


def test_a_lora_tensor_without_a_module_is_an_error(llava_adapter, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    root, _ = llava_adapter
    folder = tmp_path / "extra"
    shutil.copytree(root / "new", folder)
    weights = load_file(folder / "adapter_model.safetensors")
    weights["base_model.model.model.nowhere.q_proj.lora_A.weight"] = torch.zeros(4, 8)
    save_file(weights, folder / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=r"extra: 1 of 57 saved tensors match no module.*nowhere"):
        load_model_and_processor(root / "base", adapter=folder)


def test_layout_renames_follow_the_old_layouts():
    from text4seg.models.loading import layout_renames, peft_key_mapping

    modules = {
        "model.language_model.layers.0.self_attn.q_proj",
        "model.vision_tower.encoder.layers.0.fc1",
        "model.visual.blocks.0.attn.qkv",
        "lm_head",
    }
    keys = [
        "base_model.model.language_model.model.layers.0.self_attn.q_proj.lora_A.weight",
        "base_model.model.vision_tower.encoder.layers.0.fc1.lora_B.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",  # Qwen2-VL's old text layout
        "base_model.model.visual.blocks.0.attn.qkv.lora_A.weight",
        "base_model.model.language_model.lm_head.lora_A.weight",
    ]
    renames = layout_renames(keys, modules)
    assert renames == {
        "language_model.model.layers.0.self_attn.q_proj": "model.language_model.layers.0.self_attn.q_proj",
        "vision_tower.encoder.layers.0.fc1": "model.vision_tower.encoder.layers.0.fc1",
        "model.layers.0.self_attn.q_proj": "model.language_model.layers.0.self_attn.q_proj",
        "visual.blocks.0.attn.qkv": "model.visual.blocks.0.attn.qkv",
        "language_model.lm_head": "lm_head",
    }
    assert (
        layout_renames(
            [k.replace("base_model.model.", "base_model.model.model.", 1) for k in keys[:1]], modules
        )
        == {}
    )
    mapping = peft_key_mapping(renames, set(renames))
    assert len(mapping) <= 5  # one rule per kind of move, not one per module


def test_bin_adapter_keys_are_read_weights_only(tmp_path):
    from text4seg.models.loading import saved_adapter_keys

    torch.save({"base_model.model.x.lora_A.weight": torch.zeros(2, 2)}, tmp_path / "adapter_model.bin")
    assert saved_adapter_keys(tmp_path) == ["base_model.model.x.lora_A.weight"]
    with pytest.raises(FileNotFoundError, match="no adapter_model.safetensors"):
        saved_adapter_keys(tmp_path / "empty")
