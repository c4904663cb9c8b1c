"""Choose a segmenter's `background_bias` on validation records (never on the split you report)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BIASES = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0)


@dataclass
class Calibration:
    """The chosen bias and the validation score (`metric`) of every bias tried."""

    bias: float
    metric: str
    scores: dict[float, float] = field(default_factory=dict)


def calibrate_background_bias(
    segmenter: Any,
    records: Any,
    biases: Sequence[float] = DEFAULT_BIASES,
    *,
    metric: str = "gIoU",
    batch_size: int = 8,
    progress: bool = False,
) -> Calibration:
    """Score `records` once per bias and set `segmenter.background_bias` to the best (ties: smallest).

    `records` are referring records (a `datasets.Dataset`); the score is the coarse `metric` (gIoU or
    cIoU) over all of them.
    """
    from text4seg.eval.evaluate import evaluate

    if not biases:
        raise ValueError("no biases to try")
    scores: dict[float, float] = {}
    for bias in biases:
        segmenter.background_bias = float(bias)
        report = evaluate(segmenter, records, batch_size=batch_size, progress=progress)
        groups = report.metrics.get("refer") or {}
        if not groups:
            raise ValueError("calibration needs referring records (task 'refer')")
        coarse = groups["all"]["coarse"] if "all" in groups else next(iter(groups.values()))["coarse"]
        scores[float(bias)] = float(coarse[metric])
    best = max(scores, key=lambda b: (scores[b], -b))
    segmenter.background_bias = best
    return Calibration(best, metric, scores)
