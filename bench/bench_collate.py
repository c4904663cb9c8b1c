"""Collating multi-turn conversations: one image preprocessing per record against one per processor call.

A conversation record with T assistant answers runs the processor 1 + 2 (T - 1) times (the whole
conversation, then each earlier answer's span; `text4seg.train.collate`). `Collator.encode` preprocesses the
record's images once for all of them (`image_features_once`); `Collator._encode` alone is the path without
that reuse. Both are timed on the same record: a tiny random processor with its real image preprocessing
(448 px, patch 14) and one 640×480 image.

Run: `.venv/bin/python bench/bench_collate.py [--arch qwen2_vl --repeats 10]`. Writes bench/results/collate.md.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from text4seg.models.tiny import build_tiny
from text4seg.train.collate import IGNORE_INDEX, Collator, split_record

RESULTS = Path(__file__).parent / "results" / "collate.md"


def conversation(turns: int, image: Image.Image) -> dict:
    """A record of `turns` question/answer pairs about one image (the image in the first question)."""
    messages = []
    for t in range(turns):
        content = [{"type": "text", "text": f"Question {t} about the picture?"}]
        if t == 0:
            content = [{"type": "image"}, *content]
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": f"Answer number {t}."}]})
    return {"id": f"conv/{turns}", "messages": messages, "images": [image]}


def ms_per_record(encode, repeats: int) -> float:
    encode()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        encode()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="qwen2_vl")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    _, processor = build_tiny(args.arch, image_size=448, patch_size=14)
    collator = Collator(processor, max_length=8192)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    rows = []
    for turns in (1, 3, 6):
        record = conversation(turns, image)
        encoded = collator.encode(record)
        labelled = sum(label != IGNORE_INDEX for label in encoded.labels)
        every_call = ms_per_record(lambda r=record: collator._encode(r, *split_record(r)), args.repeats)
        once = ms_per_record(lambda r=record: collator.encode(r), args.repeats)
        rows.append(
            f"| {turns} | {encoded.length} | {labelled} | {every_call:.1f} | {once:.1f} | {every_call / once:.1f}× |"
        )
        print(rows[-1], flush=True)
    text = "\n".join(
        [
            "## Collating multi-turn conversations (bench/bench_collate.py)",
            "",
            f"Machine: {platform.machine()}, {torch.get_num_threads()} torch thread, Python "
            f"{platform.python_version()}, torch {torch.__version__}. Command: `.venv/bin/python "
            f"bench/bench_collate.py --arch {args.arch} --repeats {args.repeats}`. A tiny random {args.arch} "
            "processor with its real image preprocessing (448 px, patch 14), one 640×480 image, `Collator.encode` "
            "per record (mean of the repeats after a warm-up).",
            "",
            "| answers | tokens | labelled | ms/record, images preprocessed per call | once per record | faster |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "A record with T answers runs the processor 1 + 2 (T - 1) times; with the images preprocessed once, "
            "what remains per call is the chat template and the tokenizer.",
        ]
    )
    RESULTS.write_text(text + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
