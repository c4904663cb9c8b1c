"""The one way to reach a model under its wrappers, and a parameter's name under PEFT's.

Training wraps a transformers model in PEFT (`PeftModel.get_base_model()`), in DDP / Accelerate /
DeepSpeed / FSDP (`.module`) and in `torch.compile` (`._orig_mod`), in any nesting. Code that needs the
transformers model itself (its class, config, generation config, module names) calls `unwrap_model`.
Wrappers are recognised by their class, not by attribute look-ups that DeepSpeed forwards to the
wrapped module, so no torch, transformers or peft import is needed.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["base_parameter_name", "unwrap_model"]

# PEFT prefixes parameter names with this, moves an adapted layer's own weights into `base_layer` and keeps a
# trained copy of a `modules_to_save` module beside the original.
_PEFT_PREFIX = "base_model.model."
_PEFT_INSERTS = re.compile(r"\.(?:base_layer|original_module|modules_to_save\.default)(?=\.|$)")


def _is_transformers_model(model: Any) -> bool:
    return any(cls.__name__ == "PreTrainedModel" for cls in type(model).__mro__)


def _is_peft(model: Any) -> bool:
    return callable(getattr(type(model), "get_base_model", None))


def unwrap_model(model: Any, *, keep_peft: bool = False, max_depth: int = 8) -> Any:
    """The transformers model inside `model`: through `torch.compile`, DDP/Accelerate/DeepSpeed/FSDP
    (`.module`) and, unless `keep_peft`, PEFT (`get_base_model()`, whose modules carry the adapters).

    A model that is none of these wrappers comes back as it is; so does anything after `max_depth` levels.
    With `keep_peft` the PEFT model itself is returned (to save or merge its adapter).
    """
    for _ in range(max_depth):
        if _is_transformers_model(model):
            return model
        if _is_peft(model):
            if keep_peft:
                return model
            model = model.get_base_model()
            continue
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if inner is None:
            return model
        model = inner
    return model


def base_parameter_name(name: str) -> str:
    """The name a parameter of a PEFT model has in its base model (`base_layer` weights and `modules_to_save`
    copies included; a LoRA matrix keeps its `lora_` name, which the base model does not have)."""
    return _PEFT_INSERTS.sub("", name.removeprefix(_PEFT_PREFIX))
