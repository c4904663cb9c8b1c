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
    "end_of_turn",
    "find_parts",
    "load_model_and_processor",
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
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'text4seg.models' has no attribute {name!r}")
