"""Small training records in the docs/RECORDS.md schema, drawn from the synthetic shapes generator."""

from __future__ import annotations

import numpy as np
from PIL import Image

import text4seg as t4s
from text4seg.data.synthetic import generate_sample

FMT = t4s.TEXT4SEG.with_grid(8)


def make_records(
    n: int = 4, *, size: int = 32, seed: int = 0, grid_fmt: t4s.DescriptorFormat = FMT
) -> list[dict]:
    """`n` referring records (one image, one question, one answer with a descriptor)."""
    records = []
    for i in range(n):
        sample = generate_sample(np.random.default_rng([seed, i]), 96, distractor=False, crowd=False)
        expression = sample.expressions[0]
        label = expression.sentences[0]
        mask = sample.mask(expression)
        answer = t4s.format_answer(
            "Sure, here it is.", t4s.encode_mask(mask, label, fmt=grid_fmt), fmt=grid_fmt
        )
        image = Image.fromarray(sample.image).resize((size, size))
        records.append(
            {
                "id": f"synthetic/train/{seed}/{i}",
                "images": [image],
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image"},
                            {"type": "text", "text": f"Please segment the {label}."},
                        ],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
            }
        )
    return records
