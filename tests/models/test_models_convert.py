"""`text4seg convert llava-original`: an original-layout LLaVA-1.5 checkpoint, made offline from the key
layout (tiny Llama + tiny CLIP tower), becomes a llava-hf folder whose weights sit where
LlavaForConditionalGeneration expects them, and which loads and generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as tf
from PIL import Image
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from text4seg.cli import main
from text4seg.models import registry
from text4seg.models.convert import VICUNA_SYSTEM, ConversionError, convert_llava_original, read_weights
from text4seg.models.loading import load_model_and_processor
from text4seg.models.preprocess import hidden_share, visible_mode
from text4seg.protocol.asking import Asking

HIDDEN, TOWER_HIDDEN = 64, 32


def _llama_tokenizer() -> tf.PreTrainedTokenizerFast:
    """A byte-level BPE with Llama's specials only (<unk>, <s>, </s>): no <image>, no pad."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["USER: ASSISTANT: segment the red circle others *4|"] * 20, trainer=trainer)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", add_bos_token=True
    )


def _tower(folder: Path) -> torch.nn.Module:
    """A tiny CLIP saved as openai/clip-vit-large-patch14-336 is (a CLIPModel: vision_model.*, text_model.*);
    returns its vision transformer."""
    vision = dict(
        hidden_size=TOWER_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    text = dict(hidden_size=TOWER_HIDDEN, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(1)
    clip = tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=TOWER_HIDDEN))
    clip.save_pretrained(folder)
    tf.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return clip.vision_model


def _original(folder: Path, tower_dir: Path, *, as_bin: bool = False) -> dict[str, torch.Tensor]:
    """An original-layout LLaVA-1.5 checkpoint: Llama under model., lm_head, model.mm_projector.0/2."""
    tok = _llama_tokenizer()
    text = tf.LlamaConfig(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(2)
    weights = dict(tf.LlamaForCausalLM(text).state_dict())
    weights["model.mm_projector.0.weight"] = torch.randn(HIDDEN, TOWER_HIDDEN)
    weights["model.mm_projector.0.bias"] = torch.randn(HIDDEN)
    weights["model.mm_projector.2.weight"] = torch.randn(HIDDEN, HIDDEN)
    weights["model.mm_projector.2.bias"] = torch.randn(HIDDEN)
    folder.mkdir(parents=True)
    config = text.to_dict() | {
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "mm_vision_tower": str(tower_dir),
        "mm_hidden_size": TOWER_HIDDEN,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad",
        "tune_mm_mlp_adapter": False,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tok.save_pretrained(folder)
    weights = {k: v.contiguous() for k, v in weights.items()}
    if as_bin:
        keys = sorted(weights)
        torch.save(
            {k: weights[k] for k in keys[: len(keys) // 2]}, folder / "pytorch_model-00001-of-00002.bin"
        )
        torch.save(
            {k: weights[k] for k in keys[len(keys) // 2 :]}, folder / "pytorch_model-00002-of-00002.bin"
        )
    else:
        save_file(weights, str(folder / "model.safetensors"))
    return weights


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    tower = _tower(root / "clip")
    weights = _original(root / "original", root / "clip", as_bin=True)
    out = convert_llava_original(root / "original", root / "hf", preset="text4seg-p24", dtype="float32")
    return out, weights, tower


def test_every_weight_is_where_llava_hf_expects_it(converted):
    out, weights, tower = converted
    model = tf.LlavaForConditionalGeneration.from_pretrained(out, use_safetensors=True)
    parts = registry.find_parts(model)
    got = model.state_dict()
    vocab = weights["model.embed_tokens.weight"].shape[0]
    lm = parts.language_model
    for key, value in weights.items():
        if key.startswith("model.mm_projector."):
            layer = {"0": "linear_1", "2": "linear_2"}[key.split(".")[2]]
            target = f"{parts.projector[0]}.{layer}.{key.rsplit('.', 1)[1]}"
        elif key.startswith("lm_head."):
            target = f"{parts.lm_head}.weight"
        else:
            target = f"{lm}.{key[len('model.') :]}"
        # the first rows of the resized embeddings and head are the original ones
        assert torch.equal(got[target][: value.shape[0]], value), key
    for key, value in tower.state_dict().items():
        candidates = [f"{parts.vision_tower[0]}.{key}", f"{parts.vision_tower[0]}.vision_model.{key}"]
        target = next(c for c in candidates if c in got)
        assert torch.equal(got[target], value), key
    rows = got[f"{lm}.embed_tokens.weight"].shape[0]
    assert rows % 64 == 0 and rows >= vocab + 2
    assert model.config.image_seq_length == 16 and model.config.vision_feature_layer == -2
    assert model.config.vision_feature_select_strategy == "default"


def test_converted_folder_loads_asks_like_llava_1_5_and_generates(converted):
    out, _, _ = converted
    model, processor = load_model_and_processor(out, dtype="float32")
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids("<image>") == model.config.image_token_index
    assert tok.pad_token is not None and tok.pad_token_id == model.config.pad_token_id
    prompt = registry.render_prompt(processor, "Please segment the red circle.")
    assert prompt == f"{VICUNA_SYSTEM} USER: <image>\nPlease segment the red circle. ASSISTANT:"
    assert registry.end_of_turn(processor) == "</s>"
    assert visible_mode(processor) == "squash" and not hidden_share(processor, 640, 480)
    assert Asking.load(out) == Asking(grid=(24, 24), answer_sentences="free", question_style="text4seg")
    image = Image.new("RGB", (64, 48), (200, 30, 30))
    add = registry.add_special_tokens_for(processor, prompt)
    enc = processor(text=[prompt], images=[[image]], return_tensors="pt", add_special_tokens=add)
    assert enc["input_ids"][0, 0] == tok.bos_token_id
    with torch.no_grad():
        generated = model.generate(**enc, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] == enc["input_ids"].shape[1] + 4


def test_cli_converts_safetensors_and_names_the_tower(tmp_path, capsys):
    _tower(tmp_path / "clip")
    _original(tmp_path / "original", tmp_path / "elsewhere")
    code = main(
        ["convert", "llava-original", str(tmp_path / "original"), "--out", str(tmp_path / "hf"),
         "--vision-tower", str(tmp_path / "clip")]
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    assert Asking.load(tmp_path / "hf").grid == (16, 16)
    assert str(tmp_path / "hf") in capsys.readouterr().out


def test_cli_refuses_a_missing_tower_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _original(tmp_path / "original", tmp_path / "no-such-tower")
    code = main(["convert", "llava-original", str(tmp_path / "original"), "--out", str(tmp_path / "hf")])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-tower" in err and "--vision-tower" in err and "Traceback" not in err


def test_pickles_holding_anything_but_tensors_are_refused(tmp_path):
    torch.save({"model.norm.weight": torch.ones(2), "step": 3}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConversionError, match="entry 'step' is not a tensor"):
        read_weights(tmp_path)
    torch.save({"model.norm.weight": torch.ones(2), "opt": {"lr": 0.1}}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConversionError, match="'opt' is not a tensor"):
        read_weights(tmp_path)

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Payload()}, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=True)
    with pytest.raises(ConversionError, match="not a plain tensor checkpoint"):
        read_weights(tmp_path)


def test_other_layouts_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConversionError, match="is not LlavaLlamaForCausalLM"):
        convert_llava_original(tmp_path, tmp_path / "out")
    config = {"architectures": ["LlavaLlamaForCausalLM"], "mm_projector_type": "linear"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match="only LLaVA-1.5's mlp2x_gelu"):
        convert_llava_original(tmp_path, tmp_path / "out")
