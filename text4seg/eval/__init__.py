"""Evaluation: numpy metrics (importable without torch) and the dataset evaluation loop.

The loop needs torch, so it is not imported here: `from text4seg.eval.evaluate import evaluate, EvalReport`.
"""

from __future__ import annotations

from text4seg.eval.metrics import (
    PRECISION_THRESHOLDS,
    ExactSum,
    ReferMetrics,
    SampleScore,
    SemanticMetrics,
    box_iou,
    confusion_matrix,
    intersection_union,
    mask_box,
    mask_iou,
)

__all__ = [
    "PRECISION_THRESHOLDS",
    "ExactSum",
    "ReferMetrics",
    "SampleScore",
    "SemanticMetrics",
    "box_iou",
    "confusion_matrix",
    "intersection_union",
    "mask_box",
    "mask_iou",
]
