"""The training loss on answer tokens, with logits computed only where an answer token is predicted.

A model's own loss (`model(**batch, labels=...)`) projects every position onto the vocabulary, image
tokens and prompt included, although only the answer's labels count. For a real checkpoint that can be
the largest activation of the step (8 × 1,300 positions × 152k vocabulary in fp32 is 6 GB for Qwen2-VL;
computed, not measured here); for the demo's tiny model (~650 tokens) it saved 2-7 % of a step. `answer_loss` asks the model for the logits
of the last positions only (`logits_to_keep`, which every supported architecture takes), from the
first answer token of the batch on, and computes the same mean cross-entropy as the model would.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from text4seg.models.unwrap import unwrap_model

from .collate import IGNORE_INDEX

__all__ = ["answer_loss", "keeps_logits"]


@functools.cache
def _takes_logits_to_keep(cls: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return False


def keeps_logits(model: Any) -> bool:
    """Whether `model` (possibly wrapped by PEFT, DDP, Accelerate or torch.compile) takes `logits_to_keep`."""
    return _takes_logits_to_keep(type(unwrap_model(model)))


def answer_loss(model: Any, batch: dict[str, Any], keep_logits: bool = True) -> Any:
    """Mean next-token cross-entropy over the tokens of `batch["labels"]` that are not `IGNORE_INDEX` (-100).

    With `keep_logits` the model computes logits only from the batch's first labelled position on;
    otherwise this is the model's own loss. Equal to `model(**batch).loss` up to float rounding.
    """
    import torch.nn.functional as F

    if not keep_logits:
        return model(**batch).loss
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    length = labels.shape[1]
    first = max(1, int(labelled[0])) if len(labelled) else length - 1
    keep = length - first + 1  # the logits at positions first-1 .. length-1
    logits = model(**inputs, logits_to_keep=keep).logits
    if logits.shape[1] != keep:
        raise RuntimeError(
            f"{type(model).__name__} returned {logits.shape[1]} positions for logits_to_keep={keep}"
        )
    predicted = logits[:, :-1].float()
    target = labels[:, first:].to(predicted.device)
    if not (target != IGNORE_INDEX).any():
        return predicted.sum() * 0.0  # no answer token: a zero loss that keeps the graph
    return F.cross_entropy(
        predicted.reshape(-1, predicted.shape[-1]), target.reshape(-1), ignore_index=IGNORE_INDEX
    )
