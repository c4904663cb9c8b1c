"""Load any image-text-to-text model (+ optional PEFT adapter) through the Auto classes, safely.

Weights are read with safetensors only (`use_safetensors=True`): no pickle unless the user converts the
checkpoint. `trust_remote_code` is passed through only when the caller asks for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"


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
) -> tuple[Any, Any]:
    """Load `(model, processor)` from a hub id or a local folder.

    `adapter` is a PEFT adapter folder loaded on top of the model. If `name_or_path` is itself an adapter
    folder (as written by `text4seg train`), its base model is loaded first and the processor saved next
    to the adapter is used. `merge_adapter=True` folds the adapter into the weights. `processor_kwargs` go to
    `AutoProcessor.from_pretrained` (e.g. `{"min_pixels": ..., "max_pixels": ...}` for Qwen-VL). `visible`
    says how the whole image is shown to the model (see `load_processor`).
    """
    from transformers import AutoModelForImageTextToText

    source = str(name_or_path)
    if adapter is None and is_adapter_dir(source):
        adapter, source = source, adapter_base(source)
    processor_source = adapter if adapter is not None and _has_processor(adapter) else source
    processor_kwargs = dict(processor_kwargs or {})
    if visible is not None:
        processor_kwargs["visible"] = visible
    processor = load_processor(processor_source, trust_remote_code=trust_remote_code, **processor_kwargs)
    kwargs: dict[str, Any] = {"dtype": _resolve_dtype(dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForImageTextToText.from_pretrained(source, use_safetensors=True, **kwargs)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=is_trainable)
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
