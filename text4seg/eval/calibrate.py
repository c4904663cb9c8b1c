"""Choose a segmenter's `background_bias` on validation records (never on the split you report)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MAX_BIAS = 10.0
PATIENCE = 2


@dataclass
class Calibration:
    """The chosen bias and the validation score (`metric`) of every bias tried."""

    bias: float
    metric: str
    scores: dict[float, float] = field(default_factory=dict)


def calibrate_background_bias(
    segmenter: Any,
    records: Any,
    biases: Sequence[float] | None = None,
    *,
    metric: str = "gIoU",
    batch_size: int = 8,
    progress: bool = False,
) -> Calibration:
    """Score `records` once per bias and set `segmenter.background_bias` to the best (ties: smallest).

    `records` are referring records (a `datasets.Dataset`); the score is the coarse `metric` (gIoU or
    cIoU) over all of them. With `biases` None the search walks 0, 1, 2, … up to `MAX_BIAS` and stops
    once `PATIENCE` biases in a row have scored below the best so far.
    """
    from text4seg.eval.evaluate import evaluate

    if biases is not None and not biases:
        raise ValueError("no biases to try")
    adaptive = biases is None
    candidates = [float(b) for b in range(int(MAX_BIAS) + 1)] if adaptive else [float(b) for b in biases]
    scores: dict[float, float] = {}
    worse = 0
    for bias in candidates:
        segmenter.background_bias = bias
        report = evaluate(segmenter, records, batch_size=batch_size, progress=progress)
        score = float(report.refer_coarse()[metric])
        worse = worse + 1 if scores and score < max(scores.values()) else 0
        scores[bias] = score
        if adaptive and worse >= PATIENCE:
            break
    best = max(scores, key=lambda b: (scores[b], -b))
    segmenter.background_bias = best
    return Calibration(best, metric, scores)
