"""Model construction and loading: tiny offline models, Auto-class loading, the registry of architecture
facts, and the one unwrapper of PEFT/DDP/Accelerate models.

Submodules import torch/transformers lazily, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ARCHS",
    "arch_facts",
    "build_tiny",
    "convert_llava_original",
    "end_of_turn",
    "find_parts",
    "hidden_share",
    "load_model_and_processor",
    "make_visible",
    "render_prompt",
    "stop_token_ids",
    "unwrap_model",
]

_LAZY = {
    "ARCHS": "text4seg.models.tiny",
    "build_tiny": "text4seg.models.tiny",
    "load_model_and_processor": "text4seg.models.loading",
    "find_parts": "text4seg.models.registry",
    "end_of_turn": "text4seg.models.registry",
    "render_prompt": "text4seg.models.registry",
    "arch_facts": "text4seg.models.registry",
    "stop_token_ids": "text4seg.models.registry",
    "unwrap_model": "text4seg.models.unwrap",
    "hidden_share": "text4seg.models.preprocess",
    "make_visible": "text4seg.models.preprocess",
    "convert_llava_original": "text4seg.models.convert",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'text4seg.models' has no attribute {name!r}")
