"""Convert an original-layout LLaVA-1.5 checkpoint (github.com/haotian-liu/LLaVA, as Text4Seg's released
models) into a llava-hf folder that `load_model_and_processor` and `text4seg predict` read.

The original layout (`LlavaLlamaForCausalLM`): the Llama language model under `model.` with `lm_head`, the
two-layer GELU projector as `model.mm_projector.0` / `.2`, and the CLIP tower named by `mm_vision_tower` in
config.json (its weights usually not in the checkpoint; when they are, as `model.vision_tower.vision_tower.`,
they win). The llava-hf folder gets: safetensors weights placed where `LlavaForConditionalGeneration`
expects them (checked against the keys and shapes of an empty model of the target config), the `<image>`
and `<pad>` tokens added and the embeddings resized (to a multiple of 64, as llava-hf; new rows are the mean
of the old ones), LLaVA-1.5's Vicuna conversation as the chat template, square-resize preprocessing
(`models.preprocess`, visible="squash"), and a `text4seg.json` preset (`protocol.asking.Asking`).

Weights are read from safetensors when the folder has them; pickled `.bin` shards only through
`torch.load(weights_only=True)`, and refused unless every entry is a tensor. Offline, the tower must be a
local folder (`vision_tower`); a hub id is fetched with `huggingface_hub.snapshot_download`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text4seg.protocol.asking import Asking

IMAGE_TOKEN = "<image>"
PAD_TOKEN = "<pad>"
VICUNA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
# LLaVA-1.5's conv_vicuna_v1 ("llava_v1"): "SYSTEM USER: <image>\nQ ASSISTANT: A</s>".
VICUNA_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] if messages[0]['content'] is string "
    "else messages[0]['content'][0]['text'] %}"
    "{% else %}{% set system = " + repr(VICUNA_SYSTEM) + " %}{% endif %}"
    "{{ system }}"
    "{% for m in messages if m['role'] != 'system' %}"
    "{% if m['role'] == 'assistant' %}{{ ' ASSISTANT: ' }}{% else %}{{ ' USER: ' }}{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] if c['type'] == 'image' %}{{ '<image>\\n' }}{% endfor %}"
    "{% for c in m['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}"
    "{% endif %}"
    "{% if m['role'] == 'assistant' %}{{ '</s>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ ' ASSISTANT:' }}{% endif %}"
)
PRESETS = {"text4seg": 16, "text4seg-p24": 24}
_PROJECTOR = {"model.mm_projector.0": "linear_1", "model.mm_projector.2": "linear_2"}
_TOWER_PREFIX = "model.vision_tower.vision_tower."
_SELECT_FEATURE = {"patch": "default", "cls_patch": "full"}


class ConversionError(ValueError):
    """A checkpoint this converter cannot turn into a llava-hf folder (the message says why)."""


def read_weights(folder: str | Path) -> dict[str, Any]:
    """All tensors of a checkpoint folder: its safetensors files, else its `.bin` files read with
    `torch.load(weights_only=True)` (anything but a name -> tensor mapping is refused)."""
    folder = Path(folder)
    safetensors = sorted(folder.glob("*.safetensors"))
    if safetensors:
        from safetensors.torch import load_file

        return {k: v for f in safetensors for k, v in load_file(str(f)).items()}
    shards = sorted(folder.glob("*.bin"))
    if not shards:
        raise ConversionError(f"{folder}: no *.safetensors or *.bin weights")
    weights: dict[str, Any] = {}
    for shard in shards:
        weights.update(_read_bin(shard))
    return weights


def _read_bin(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(f"{path}: not a plain tensor checkpoint ({first})") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: holds a {type(data).__name__}, not a mapping of names to tensors")
    bad = [k for k, v in data.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ConversionError(f"{path}: entry {bad[0]!r} is not a tensor; only tensors are accepted")
    return data


@dataclass(frozen=True)
class Source:
    """An original-layout checkpoint: its config.json, its weights, and the folder of its CLIP tower."""

    folder: Path
    config: dict[str, Any]
    weights: dict[str, Any]
    tower: Path


def _check_config(folder: Path, config: dict[str, Any]) -> None:
    archs = config.get("architectures") or []
    if "LlavaLlamaForCausalLM" not in archs:
        raise ConversionError(f"{folder}/config.json: architectures {archs} is not LlavaLlamaForCausalLM")
    if config.get("mm_projector_type", "linear") != "mlp2x_gelu":
        raise ConversionError(
            f"{folder}/config.json: mm_projector_type {config.get('mm_projector_type')!r} "
            "(only LLaVA-1.5's mlp2x_gelu is supported)"
        )
    if config.get("mm_use_im_start_end"):
        raise ConversionError(f"{folder}/config.json: mm_use_im_start_end image markers are not supported")
    if config.get("mm_vision_select_feature", "patch") not in _SELECT_FEATURE:
        raise ConversionError(
            f"{folder}/config.json: mm_vision_select_feature {config['mm_vision_select_feature']!r}"
        )


def _tower_folder(name: str) -> Path:
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"]))
    except Exception as err:  # offline, unknown id: say which tower was needed
        raise ConversionError(
            f"vision tower {name!r} is neither a local folder nor downloadable ({type(err).__name__}); "
            "pass --vision-tower DIR holding the CLIP checkpoint"
        ) from None


def read_source(folder: str | Path, vision_tower: str | Path | None = None) -> Source:
    """Read and check an original-layout checkpoint folder (and locate its vision tower)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{folder}: no config.json")
    config = json.loads(config_path.read_text())
    _check_config(folder, config)
    tower_name = str(vision_tower or config.get("mm_vision_tower") or "")
    if not tower_name:
        raise ConversionError(f"{config_path}: no mm_vision_tower; pass --vision-tower")
    return Source(folder, config, read_weights(folder), _tower_folder(tower_name))


def _text_config(config: dict[str, Any]) -> Any:
    from transformers import LlamaConfig

    skip = ("mm_", "architectures", "model_type", "image_", "tune_", "freeze_", "tokenizer_", "use_mm")
    values = {k: v for k, v in config.items() if not k.startswith(skip) and not k.startswith("_")}
    return LlamaConfig(**{**values, "tie_word_embeddings": False})


def _target_config(source: Source, vocab: int, image_id: int, pad_id: int) -> Any:
    from transformers import CLIPVisionConfig, LlavaConfig

    vision = CLIPVisionConfig.from_pretrained(str(source.tower))
    text = _text_config(source.config)
    text.vocab_size = vocab
    text.pad_token_id = pad_id
    seq = (vision.image_size // vision.patch_size) ** 2
    return LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_index=image_id,
        image_seq_length=seq,
        projector_hidden_act="gelu",
        vision_feature_select_strategy=_SELECT_FEATURE[
            source.config.get("mm_vision_select_feature", "patch")
        ],
        vision_feature_layer=int(source.config.get("mm_vision_select_layer", -2)),
        pad_token_id=pad_id,
        tie_word_embeddings=False,
    )


def _module_names(model: Any) -> dict[str, str]:
    """Where an empty LlavaForConditionalGeneration keeps its parts (names differ across transformers)."""
    from text4seg.models.registry import find_parts

    parts = find_parts(model)
    if len(parts.vision_tower) != 1 or len(parts.projector) != 1 or parts.lm_head is None:
        raise ConversionError(f"unexpected LlavaForConditionalGeneration layout: {parts}")
    tower = parts.vision_tower[0]
    # CLIP checkpoints name the tower's weights vision_model.*; some transformers versions drop that level.
    nested = any(k.startswith(f"{tower}.vision_model.") for k in model.state_dict())
    return {
        "language": parts.language_model,
        "tower": f"{tower}.vision_model" if nested else tower,
        "projector": parts.projector[0],
        "head": parts.lm_head,
    }


def _mapped(source: Source, names: dict[str, str]) -> dict[str, Any]:
    """The source tensors under the target's names (embeddings not yet resized)."""
    out: dict[str, Any] = {}
    tower = _tower_weights(source.weights, _TOWER_PREFIX) or _tower_weights(read_weights(source.tower), "")
    for key, value in tower.items():
        out[f"{names['tower']}.{key}"] = value
    for key, value in source.weights.items():
        if key.startswith(_TOWER_PREFIX):
            continue
        module, _, leaf = key.rpartition(".")
        if module in _PROJECTOR:
            out[f"{names['projector']}.{_PROJECTOR[module]}.{leaf}"] = value
        elif key.startswith("lm_head."):
            out[f"{names['head']}.{key[len('lm_head.') :]}"] = value
        elif key.startswith("model."):
            out[f"{names['language']}.{key[len('model.') :]}"] = value
        else:
            raise ConversionError(
                f"{source.folder}: unexpected weight {key!r} in an original LLaVA checkpoint"
            )
    return out


def _tower_weights(weights: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The CLIP vision weights under `prefix` + "vision_model." (a CLIPModel or CLIPVisionModel checkpoint),
    named without that prefix; a tower checkpoint without the level (`prefix` "") is taken as it is."""
    start = prefix + "vision_model."
    found = {k[len(start) :]: v for k, v in weights.items() if k.startswith(start)}
    if found or prefix:
        return found
    parts = ("embeddings.", "pre_layrnorm.", "encoder.", "post_layernorm.")
    return {k: v for k, v in weights.items() if k.startswith(parts)}


def _resized(weight: Any, rows: int) -> Any:
    """`weight` with rows appended up to `rows`, each the mean of the existing rows."""
    import torch

    extra = rows - weight.shape[0]
    if extra <= 0:
        return weight
    mean = weight.float().mean(dim=0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(extra, -1)], dim=0)


def _tokenizer(source: Source) -> tuple[Any, int]:
    """The source tokenizer with `<image>` and `<pad>` added, and the embedding rows it needs."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(source.folder))
    tok.add_tokens([IMAGE_TOKEN], special_tokens=True)
    if tok.pad_token is None or tok.pad_token == tok.unk_token:
        tok.add_special_tokens({"pad_token": PAD_TOKEN})
    tok.chat_template = VICUNA_TEMPLATE
    rows = -(-len(tok) // 64) * 64
    return tok, rows


def _processor(source: Source, tok: Any, config: Any) -> Any:
    from transformers import CLIPImageProcessor, LlavaProcessor

    from text4seg.models.preprocess import make_visible

    side = config.vision_config.image_size
    try:
        image_processor = CLIPImageProcessor.from_pretrained(str(source.tower))
    except OSError:  # a tower without preprocessor_config.json: CLIP's settings at the tower's size
        image_processor = CLIPImageProcessor(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}
        )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=1,
        chat_template=VICUNA_TEMPLATE,
    )
    return make_visible(processor, "squash")


def convert_llava_original(
    src: str | Path,
    out: str | Path,
    *,
    vision_tower: str | Path | None = None,
    preset: str = "text4seg",
    dtype: str = "float16",
) -> Path:
    """Write the llava-hf version of the original-layout LLaVA-1.5 checkpoint `src` to `out` (see the
    module doc); returns `out`. `preset` "text4seg" (16×16 grid) or "text4seg-p24" (24×24)."""
    import torch
    from transformers import LlavaForConditionalGeneration

    if preset not in PRESETS:
        raise ConversionError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    source = read_source(src, vision_tower)
    tok, rows = _tokenizer(source)
    config = _target_config(
        source, rows, tok.convert_tokens_to_ids(IMAGE_TOKEN), tok.convert_tokens_to_ids(tok.pad_token)
    )
    with torch.device("meta"):
        empty = LlavaForConditionalGeneration(config)
    names = _module_names(empty)
    weights = _mapped(source, names)
    for key in (f"{names['language']}.embed_tokens.weight", f"{names['head']}.weight"):
        if key not in weights:
            raise ConversionError(f"{source.folder}: missing {key.split('.', 1)[-1]!r} weights")
        weights[key] = _resized(weights[key], rows)
    _check_layout(source, weights, empty.state_dict())
    target = getattr(torch, dtype)
    weights = {k: v.to(target).contiguous() for k, v in weights.items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config.torch_dtype = dtype
    config.architectures = ["LlavaForConditionalGeneration"]
    config.save_pretrained(str(out))
    _save_weights(weights, out)
    _processor(source, tok, config).save_pretrained(str(out))
    Asking(grid=(PRESETS[preset],) * 2, answer_sentences="free", question_style="text4seg").save(out)
    return out


def _check_layout(source: Source, weights: dict[str, Any], expected: dict[str, Any]) -> None:
    """Every tensor the target model holds is given, with its shape, and nothing else."""
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise ConversionError(
            f"{source.folder}: weights do not fill a LlavaForConditionalGeneration "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''})"
        )
    for key, value in expected.items():
        if tuple(weights[key].shape) != tuple(value.shape):
            raise ConversionError(
                f"{source.folder}: {key} has shape {tuple(weights[key].shape)}, expected {tuple(value.shape)}"
            )


def _save_weights(weights: dict[str, Any], out: Path) -> None:
    """safetensors shards of at most 5 GB, with an index when there is more than one."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(weights, max_shard_size="5GB")
    for filename, keys in split.filename_to_tensors.items():
        save_file({k: weights[k] for k in keys}, str(out / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": {}, "weight_map": split.tensor_to_filename}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
