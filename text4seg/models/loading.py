"""Load any image-text-to-text model (+ optional PEFT adapter) through the Auto classes, safely.

Weights are read with safetensors only (`use_safetensors=True`): no pickle unless the user converts the
checkpoint. `trust_remote_code` is passed through only when the caller asks for it.

PEFT adapters load through `load_adapter`: one saved under transformers' module layout before 4.52 (such as
Text4Seg's llava-hf LoRA adapters, saved by ms-swift) has its keys and `target_modules` rewritten to today's
names (`OLD_LAYOUTS`), and every LoRA tensor is checked to have landed on the model. An adapter given as a
Hub id is first resolved to its snapshot folder in the local Hugging Face cache (`adapter_folder`), so it
gets the same remap and checks as a local folder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
HUB_ADAPTER_FILES = (*ADAPTER_WEIGHTS, "*.json", "*.jinja", "*.txt", "*.model")
"""What `adapter_folder` downloads of a Hub adapter: its weights, configs (text4seg.json among them) and the
small processor/tokenizer files a folder's own processor is read from; no other weights."""
PEFT_PREFIX = "base_model.model."
_ADAPTER_PART = re.compile(r"\.(lora_[A-Za-z_]+|modules_to_save)(\.|$)")

# Module paths of an adapter saved before transformers moved a multimodal model's parts under `model.`
# (4.52: `language_model.model.X` -> `model.language_model.X`, `language_model.lm_head` -> `lm_head`,
# `vision_tower`/`multi_modal_projector`/`visual` -> `model.<part>`; Qwen2-VL's text `model.X` ->
# `model.language_model.X`). Tried in order on a saved module path the model does not have; the first
# rewrite naming a module the model has is kept. PEFT (0.21) remaps the language model's keys of such an
# adapter itself but silently drops those of the vision tower and projector, and refuses a regex
# `target_modules` written for the old names (ms-swift's `^(language_model|multi_modal_projector)...`).
OLD_LAYOUTS: tuple[tuple[str, str], ...] = (
    (r"^language_model\.model\.", "model.language_model."),
    (r"^language_model\.lm_head(?=\.|$)", "lm_head"),
    (r"^language_model\.", "model.language_model."),
    (r"^(vision_tower|multi_modal_projector|visual|vision_model|connector)\.", r"model.\1."),
    (r"^model\.(?!language_model\.)", "model.language_model."),
)


def _resolve_dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16", "float": "float32"}
    name = names.get(str(dtype), str(dtype))
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use 'auto', 'bfloat16', 'float16' or 'float32'")
    return value


def is_adapter_dir(path: str | Path) -> bool:
    """Whether `path` is a local folder holding a PEFT adapter (adapter_config.json)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def adapter_base(path: str | Path) -> str:
    """The base model id/path recorded in a PEFT adapter folder."""
    cfg = json.loads((Path(path) / ADAPTER_CONFIG).read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ValueError(
            f"{Path(path) / ADAPTER_CONFIG} does not name its base model (base_model_name_or_path)"
        )
    return str(base)


def load_processor(
    name_or_path: str | Path, *, trust_remote_code: bool = False, visible: str | None = None, **kwargs: Any
) -> Any:
    """`AutoProcessor.from_pretrained`, refusing the silent tokenizer-only fallback of transformers, with
    the whole image made visible (`models.preprocess.make_visible`: `visible` is "squash", "pad" or
    "crop"; None keeps the choice saved with the processor, else "squash"). `visible` may also come inside
    a recipe's `model.processor` settings."""
    from transformers import AutoProcessor

    from text4seg.models.preprocess import make_visible

    processor = AutoProcessor.from_pretrained(
        str(name_or_path), trust_remote_code=trust_remote_code, **kwargs
    )
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        raise ValueError(
            f"AutoProcessor for {name_or_path} returned {type(processor).__name__}, not a multimodal processor "
            "(is torchvision installed, and does the folder hold preprocessor_config.json?)"
        )
    return make_visible(processor, visible)


def load_model_and_processor(
    name_or_path: str | Path,
    *,
    dtype: Any = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    adapter: str | Path | None = None,
    device_map: Any = None,
    merge_adapter: bool = False,
    is_trainable: bool = False,
    processor_kwargs: dict[str, Any] | None = None,
    visible: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> tuple[Any, Any]:
    """Load `(model, processor)` from a hub id or a local folder.

    `adapter` is a PEFT adapter folder loaded on top of the model. If `name_or_path` is itself an adapter
    folder (as written by `text4seg train`), its base model is loaded first and the processor saved next
    to the adapter is used. `merge_adapter=True` folds the adapter into the weights. `processor_kwargs` go to
    `AutoProcessor.from_pretrained` (e.g. `{"min_pixels": ..., "max_pixels": ...}` for Qwen-VL). `visible`
    says how the whole image is shown to the model (see `load_processor`). `cache_dir` and
    `local_files_only` go to every Hub read (processor, model, a Hub adapter: `adapter_folder`);
    `local_files_only=True` reads the local cache only, with no network request.
    """
    from transformers import AutoModelForImageTextToText

    source = str(name_or_path)
    if adapter is None and is_adapter_dir(source):
        adapter, source = source, adapter_base(source)
    hub = {"cache_dir": cache_dir, "local_files_only": local_files_only}
    if adapter is not None:
        adapter = adapter_folder(adapter, **hub)
    processor_source = adapter if adapter is not None and _has_processor(adapter) else source
    processor_kwargs = {**hub, **(processor_kwargs or {})}
    if visible is not None:
        processor_kwargs["visible"] = visible
    processor = load_processor(processor_source, trust_remote_code=trust_remote_code, **processor_kwargs)
    kwargs: dict[str, Any] = {"dtype": _resolve_dtype(dtype), "trust_remote_code": trust_remote_code, **hub}
    kwargs["adapter_kwargs"] = dict(hub)  # the Auto class looks for adapter_config.json without them (5.24)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForImageTextToText.from_pretrained(source, use_safetensors=True, **kwargs)
    if adapter is not None:
        model = load_adapter(model, adapter, is_trainable=is_trainable)
        if merge_adapter:
            model = model.merge_and_unload()
    model.eval()
    return model, processor


def _has_processor(path: str | Path) -> bool:
    p = Path(path)
    return any(
        (p / name).is_file()
        for name in ("processor_config.json", "preprocessor_config.json", "tokenizer.json")
    )


# -- PEFT adapters, old module layouts included ------------------------------------------------------
def adapter_folder(
    adapter: str | Path, *, cache_dir: str | Path | None = None, local_files_only: bool = False
) -> Path:
    """A local folder holding `adapter`: the folder itself, or a Hub adapter's snapshot in the local
    Hugging Face cache (`HUB_ADAPTER_FILES`), looked up there first and downloaded only when its config
    or weights are not cached (never with `local_files_only`: then an OSError naming the adapter)."""
    folder = Path(str(adapter)).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    kwargs: dict[str, Any] = {"cache_dir": cache_dir, "allow_patterns": list(HUB_ADAPTER_FILES)}
    try:
        cached = Path(snapshot_download(str(adapter), local_files_only=True, **kwargs))
    except LocalEntryNotFoundError:
        cached = None
    if cached is not None and is_adapter_dir(cached) and any((cached / w).is_file() for w in ADAPTER_WEIGHTS):
        return cached
    if local_files_only:
        raise OSError(f"adapter {adapter}: its config and weights are not in the local Hugging Face cache")
    return Path(snapshot_download(str(adapter), **kwargs))


def saved_adapter_keys(folder: str | Path) -> list[str]:
    """The tensor names of a local adapter folder's weights (safetensors, or a .bin read weights-only)."""
    for name in ADAPTER_WEIGHTS:
        path = Path(folder) / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return list(f.keys())
        import torch

        return list(torch.load(path, map_location="meta", weights_only=True, mmap=True))
    raise FileNotFoundError(f"adapter {folder}: no {' or '.join(ADAPTER_WEIGHTS)}")


def _module_of(key: str) -> str:
    """`base_model.model.a.b.lora_A.weight` -> `a.b` (the module the adapter tensor belongs to)."""
    path = key.removeprefix(PEFT_PREFIX)
    found = _ADAPTER_PART.search(path)
    return path[: found.start()] if found else path.rsplit(".", 1)[0]


def layout_renames(keys: list[str], modules: set[str]) -> dict[str, str]:
    """`{saved module path: module path in the model}` for every saved module the model lacks under its
    saved name but has under an older layout's rewrite (`OLD_LAYOUTS`); empty when nothing moved."""
    renames: dict[str, str] = {}
    for module in {_module_of(k) for k in keys if k.startswith(PEFT_PREFIX)}:
        if module in modules:
            continue
        for pattern, replacement in OLD_LAYOUTS:
            new = re.sub(pattern, replacement, module, count=1)
            if new != module and new in modules:
                renames[module] = new
                break
    return renames


def peft_key_mapping(renames: dict[str, str], saved_modules: set[str]) -> dict[str, str]:
    """PEFT's `key_mapping` (regex -> replacement, the first match applied to each saved key) doing
    `renames`: the `OLD_LAYOUTS` rules used, in their order, when they move exactly the renamed modules;
    else one exact pattern per renamed module."""
    used = {
        pattern: replacement
        for pattern, replacement in OLD_LAYOUTS
        if any(re.sub(pattern, replacement, old, count=1) == new for old, new in renames.items())
    }

    def applied(module: str) -> str:
        for pattern, replacement in used.items():
            new, n = re.subn(pattern, replacement, module, count=1)
            if n:
                return new
        return module

    if all(applied(m) == renames.get(m, m) for m in saved_modules):
        return used
    return {rf"^{re.escape(old)}(?=\.)": new for old, new in renames.items()}


def load_adapter(
    model: Any,
    adapter: str | Path,
    *,
    is_trainable: bool = False,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> Any:
    """`PeftModel.from_pretrained(model, adapter)`, for adapters saved under an older module layout too
    (`layout_renames`: keys and `target_modules` are rewritten to the model's names), and checked: a
    LoRA tensor that lands on no module of the model is a ValueError naming it (PEFT itself only warns,
    or says nothing). A Hub id is read from its local snapshot (`adapter_folder`)."""
    from peft import PeftConfig, PeftModel

    folder = adapter_folder(adapter, cache_dir=cache_dir, local_files_only=local_files_only)
    keys = saved_adapter_keys(folder)
    renames = layout_renames(keys, {name for name, _ in model.named_modules()})
    config = PeftConfig.from_pretrained(str(folder))
    mapping = None
    if renames:
        mapping = peft_key_mapping(renames, {_module_of(k) for k in keys})
        config.target_modules = sorted(
            {renames.get(_module_of(k), _module_of(k)) for k in keys if ".lora_" in k}
        )
    peft_model = PeftModel.from_pretrained(
        model, str(folder), is_trainable=is_trainable, config=config, key_mapping=mapping
    )
    _check_loaded(peft_model, folder, [_renamed(k, renames) for k in keys])
    return peft_model


def _renamed(key: str, renames: dict[str, str]) -> str:
    module = _module_of(key)
    new = renames.get(module)
    return key if new is None else PEFT_PREFIX + new + key.removeprefix(PEFT_PREFIX)[len(module) :]


def _check_loaded(peft_model: Any, folder: Path, saved: list[str]) -> None:
    """Every saved LoRA tensor has its place in the loaded model (PEFT drops the others with a warning at
    most). LoRA modules the adapter has no tensors for keep their zero-initialised B (no effect) and are
    left to PEFT's own warning."""
    from peft.utils import get_peft_model_state_dict

    have = set(get_peft_model_state_dict(peft_model))
    dropped = sorted(k for k in saved if ".lora_" in k and k not in have)
    if dropped:
        raise ValueError(
            f"adapter {folder}: {len(dropped)} of {len(saved)} saved tensors match no module of the model "
            f"(first: {dropped[0]}); is it an adapter of this base model?"
        )
