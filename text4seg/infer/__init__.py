"""Prediction: a fine-tuned model and its processor -> descriptor text -> masks.

Importing this package is cheap (the `text4seg predict` parser imports it); torch, transformers and
llguidance load when `Segmenter` or the constrained-decoding names are first used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Segmenter": "text4seg.infer.segmenter",
    "SegmentationResult": "text4seg.infer.segmenter",
    "GrammarCompiler": "text4seg.infer.constrain",
    "CompiledGrammar": "text4seg.infer.constrain",
    "DescriptorLogitsProcessor": "text4seg.infer.constrain",
    "ConstraintError": "text4seg.infer.constrain",
    "compiler_for": "text4seg.infer.constrain",
    "descriptor_lark": "text4seg.infer.constrain",
    "jump_forward_generate": "text4seg.infer.constrain",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'text4seg.infer' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
