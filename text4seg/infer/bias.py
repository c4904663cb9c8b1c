"""A logit penalty on the tokens that write background: the recall knob of a text4seg model.

A small or briefly trained model often knows a row holds the object, yet spreads that probability over
many ways of writing the row, so greedy decoding keeps taking the single most likely token, background.
`BackgroundBias` subtracts `bias` from the logits of every token whose text contains the background
label (and none of the query's other labels), much as a mask threshold trades precision for recall in
pixel-space models. 0 leaves decoding unchanged; calibrate it on a validation split, never on test.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch
from transformers import LogitsProcessor


def background_token_ids(tokenizer: Any, labels: Sequence[str], width: int | None = None) -> list[int]:
    """Ids of the tokens whose text contains `labels[0]` (the background) and no other label.

    The vocabulary is read once per (tokenizer, background label); each label set then only filters
    the few tokens that contain the background label.
    """
    others = [label for label in labels[1:] if label]
    candidates = _containing(tokenizer, labels[0], width)
    return [i for i, text in candidates if not any(label in text for label in others)]


@lru_cache(maxsize=16)
def _containing(tokenizer: Any, background: str, width: int | None) -> tuple[tuple[int, str], ...]:
    size = len(tokenizer) if width is None else min(width, len(tokenizer))
    texts = tokenizer.batch_decode([[i] for i in range(size)])
    return tuple((i, text) for i, text in enumerate(texts) if background in text)


class BackgroundBias(LogitsProcessor):
    """Subtract `bias` from the background tokens of each batch row (`token_ids[row]`)."""

    def __init__(self, token_ids: Sequence[Sequence[int]], bias: float):
        self.bias = float(bias)
        self.rows = [torch.as_tensor(list(ids), dtype=torch.long) for ids in token_ids]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not self.bias:
            return scores
        for row, ids in enumerate(self.rows):
            if ids.numel():
                scores[row, ids.to(scores.device)] -= self.bias
        return scores
