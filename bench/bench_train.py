"""Training-step cost on tiny models: collate (processor + chat template + labels) vs forward/backward/step.

For each architecture a tiny random model is built offline, a batch of synthetic referring records
(16×16 descriptors) is collated with `text4seg.train.collate.Collator` and one AdamW step is taken, timing
the two parts separately. A last row runs the real loop (`text4seg.train.train`) with the
`recipes/tiny_cpu.yaml` model and reads its per-step seconds from metrics.jsonl.

Run: `.venv/bin/python bench/bench_train.py [--steps 8 --threads 2]`. Writes bench/results/train.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import text4seg as t4s
from text4seg.data.synthetic import generate_sample
from text4seg.models import registry
from text4seg.models.tiny import build_tiny, count_parameters
from text4seg.train import load_config, train
from text4seg.train.collate import Collator
from text4seg.train.setup import build_optimizer, prepare_model

OUT = Path(__file__).parent / "results" / "train.md"
ROOT = Path(__file__).resolve().parents[1]


def make_records(n: int, size: int, seed: int = 0) -> list[dict]:
    """Referring records in the docs/RECORDS.md layout (image + question + answer with a 16×16 descriptor)."""
    records = []
    for i in range(n):
        sample = generate_sample(np.random.default_rng([seed, i]), 256, distractor=False, crowd=False)
        expression = sample.expressions[0]
        label = expression.sentences[0]
        answer = t4s.format_answer("Sure, here it is.", t4s.encode_mask(sample.mask(expression), label))
        records.append(
            {
                "id": f"bench/{i}",
                "images": [Image.fromarray(sample.image).resize((size, size))],
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": f"Segment the {label}."}],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
            }
        )
    return records


def time_arch(arch: str, records: list[dict], batch: int, steps: int, image_size: int) -> dict:
    model, processor = build_tiny(arch, image_size=image_size, hidden_size=128, vision_hidden_size=64)
    cfg = load_config(ROOT / "recipes" / "tiny_cpu.yaml", ["finetune.train_vision=true"])
    model, groups = prepare_model(model, cfg)
    model.train()
    optimizer = build_optimizer(groups, cfg)
    collator = Collator(processor, max_length=4096, answer_token_type=registry.answer_token_type(model))
    collate_s, step_s, tokens = [], [], []
    for i in range(steps + 2):
        chunk = [records[(i * batch + j) % len(records)] for j in range(batch)]
        t0 = time.perf_counter()
        b = collator(chunk)
        t1 = time.perf_counter()
        b.pop("skipped")
        b.pop("ids")
        loss = model(**b).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        t2 = time.perf_counter()
        if i >= 2:  # first steps warm up allocators and kernels
            collate_s.append(t1 - t0)
            step_s.append(t2 - t1)
            tokens.append(int(b["attention_mask"].sum()))
    c, s = statistics.median(collate_s), statistics.median(step_s)
    return {
        "arch": arch,
        "params": count_parameters(model),
        "tokens": int(statistics.median(tokens)),
        "collate_ms": 1000 * c,
        "step_ms": 1000 * s,
        "share": c / (c + s),
    }


def time_loop(records: list[dict], steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            f"output.dir={tmp}",
            "data.path=''",
            "loop.max_minutes=null",
            "optim.schedule_by=steps",
            f"loop.max_steps={steps + 2}",
            "loop.eval_every=null",
            "loop.save_every=null",
        ]
        cfg = load_config(ROOT / "recipes" / "tiny_cpu.yaml", overrides)
        result = train(cfg, train_dataset=records)
        lines = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
        per_step = [x["step_seconds"] for x in lines if "step_seconds" in x][2:]
    return {
        "params": result.total_parameters,
        "s_per_step": statistics.median(per_step),
        "steps": len(per_step),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument(
        "--archs",
        nargs="*",
        default=["qwen2_5_vl", "qwen3_vl", "llava", "smolvlm", "paligemma", "gemma3", "internvl"],
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    records = make_records(32, args.image_size)
    rows = [time_arch(a, records, args.batch, args.steps, args.image_size) for a in args.archs]
    loop = time_loop(make_records(32, 128), args.steps)
    command = "`.venv/bin/python bench/bench_train.py " + " ".join(
        f"--{k.replace('_', '-')} {v if not isinstance(v, list) else ' '.join(v)}"
        for k, v in vars(args).items()
    )
    lines = [
        "## Training step (tiny models, CPU)",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads (2-core machine shared with other "
        f"jobs), Python {platform.python_version()}, torch {torch.__version__}. Command: {command}`.",
        f"Batch {args.batch} synthetic referring records ({args.image_size} px images, 16×16 descriptors, answer "
        "tokens only labelled), full fine-tuning with AdamW; medians over "
        f"{args.steps} steps after 2 warm-up steps. Tiny models: text 128 wide × 2 layers, vision 64 × 2, patch 8.",
        "",
        "| architecture | parameters | tokens / batch | collate (ms) | forward+backward+step (ms) | collate share |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['arch']} | {r['params'] / 1e6:.2f}M | {r['tokens']} | {r['collate_ms']:.0f} | "
            f"{r['step_ms']:.0f} | {100 * r['share']:.0f}% |"
        )
    lines += [
        "",
        f"Whole loop (`text4seg.train.train`, `recipes/tiny_cpu.yaml` model: Qwen2.5-VL, {loop['params'] / 1e6:.2f}M "
        f"parameters, 128 px, batch 8, collate + step + logging): median **{loop['s_per_step']:.3f} s/step** over "
        f"{loop['steps']} steps.",
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
