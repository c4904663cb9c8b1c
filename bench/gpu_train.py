"""GPU training throughput of a Qwen2.5-VL-3B-shaped model with random weights (no download), in bf16.

The model is built from a config with the real 3B dimensions (text 2048 × 36 layers, 16 heads / 2 KV heads,
MLP 11008, vocabulary 151,936; vision 1280 × 32 layers, patch 14, window attention) and the processor is
assembled offline (`text4seg.models.tiny.tiny_config_and_processor`), so the run needs no hub access. Each
step collates synthetic referring records with `text4seg.train.collate.Collator` (448 px images = 256 visual
tokens, 16×16 descriptors) and takes an AdamW step with the trainer's own `prepare_model` (LoRA r64 on the
language model with gradient checkpointing, as in recipes/qwen2_5_vl_3b.yaml; `--full` for full fine-tuning).

Reports tokens/s (all tokens in the batch, and answer tokens only), seconds per step, collate share and
peak GPU memory, and writes bench/results/gpu_train.md. Not part of CI or `make bench` (needs a CUDA GPU):

    .venv/bin/python bench/gpu_train.py --batch 8 --steps 20            # LoRA (recipe setting)
    .venv/bin/python bench/gpu_train.py --batch 4 --steps 20 --full     # full fine-tuning
    .venv/bin/python bench/gpu_train.py --smoke --batch 2 --steps 2       # check the code path on a CPU
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from text4seg.models.tiny import count_parameters, tiny_config_and_processor
from text4seg.train import config_from_dict
from text4seg.train.collate import Collator
from text4seg.train.trainer import build_optimizer, prepare_model

OUT = Path(__file__).parent / "results" / "gpu_train.md"

QWEN25_VL_3B = dict(
    image_size=448,
    patch_size=14,
    hidden_size=2048,
    num_layers=36,
    num_heads=16,
    vision_hidden_size=1280,
    vision_layers=32,
    text_config={
        "intermediate_size": 11008,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "vocab_size": 151936,
        "max_position_embeddings": 128000,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    },
    vision_config={
        "intermediate_size": 3420,
        "num_heads": 16,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "out_hidden_size": 2048,
        "hidden_act": "silu",
    },
)


def records(n: int, size: int) -> list[dict]:
    import numpy as np
    from PIL import Image

    import text4seg as t4s
    from text4seg.data.synthetic import generate_sample

    out = []
    for i in range(n):
        sample = generate_sample(np.random.default_rng([0, i]), size, distractor=False, crowd=False)
        expression = sample.expressions[0]
        label = expression.sentences[0]
        answer = t4s.format_answer("Sure, here it is.", t4s.encode_mask(sample.mask(expression), label))
        out.append(
            {
                "id": f"gpu/{i}",
                "images": [Image.fromarray(sample.image)],
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image"}, {"type": "text", "text": f"Segment the {label}."}],
                    },
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]},
                ],
            }
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--no-checkpointing", action="store_true", help="disable gradient checkpointing")
    parser.add_argument(
        "--attn", default="sdpa", help="attention implementation (sdpa, flash_attention_2, eager)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="check the script on a CPU with a tiny model (no file)"
    )
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("bench/gpu_train.py needs a CUDA GPU (or --smoke to check it on a CPU)")
    from transformers import AutoModelForImageTextToText

    shape = dict(QWEN25_VL_3B) if not args.smoke else {"image_size": 56, "patch_size": 14}
    device, dtype = ("cuda", torch.bfloat16) if not args.smoke else ("cpu", torch.float32)
    config, processor = tiny_config_and_processor("qwen2_5_vl", **shape)
    config._attn_implementation = args.attn
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    n_params = count_parameters(model)
    cfg = config_from_dict(
        {
            "finetune": {
                "method": "full" if args.full else "lora",
                "lora_r": 64,
                "lora_alpha": 128,
                "gradient_checkpointing": not args.no_checkpointing,
            },
            "optim": {"lr": 1e-5 if args.full else 2e-4},
        }
    )
    model, groups = prepare_model(model, cfg)
    model.train()
    trainable = sum(p.numel() for ps in groups.values() for p in ps)
    optimizer = build_optimizer(groups, cfg)
    collator = Collator(processor, max_length=4096)
    data = records(4 * args.batch, shape["image_size"])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    collate_s, step_s, tokens, answer_tokens = [], [], [], []
    for i in range(args.warmup + args.steps):
        chunk = [data[(i * args.batch + j) % len(data)] for j in range(args.batch)]
        t0 = time.perf_counter()
        batch = collator(chunk)
        batch.pop("skipped")
        batch.pop("ids")
        batch = {k: v.to(device) for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(dtype)
        sync()
        t1 = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        t2 = time.perf_counter()
        if i >= args.warmup:
            collate_s.append(t1 - t0)
            step_s.append(t2 - t1)
            tokens.append(int(batch["attention_mask"].sum()))
            answer_tokens.append(int((batch["labels"] != -100).sum()))
    step = statistics.median(step_s)
    collate = statistics.median(collate_s)
    tok = statistics.median(tokens)
    ans = statistics.median(answer_tokens)
    if args.smoke:
        print(
            f"smoke run ok: {n_params} parameters, {step:.3f} s/step, {tok} tokens/batch, {ans} answer tokens"
        )
        return 0
    peak = torch.cuda.max_memory_allocated() / 2**30
    mode = "full fine-tuning" if args.full else "LoRA r64 on the language model"
    ckpt = "off" if args.no_checkpointing else "on"
    lines = [
        "## Training on a GPU (Qwen2.5-VL-3B shape, random weights, bf16)",
        "",
        f"Machine: {torch.cuda.get_device_name()}, torch {torch.__version__}, Python {platform.python_version()}. "
        f"Command: `.venv/bin/python bench/gpu_train.py --batch {args.batch} --steps {args.steps}"
        f"{' --full' if args.full else ''}{' --no-checkpointing' if args.no_checkpointing else ''} --attn {args.attn}`.",
        f"{n_params / 1e9:.2f}B parameters ({trainable / 1e6:.1f}M trained, {mode}), gradient checkpointing {ckpt}, "
        f"batch {args.batch} records of 448 px (256 visual tokens) with 16×16 descriptors; medians over {args.steps} steps.",
        "",
        "| s / step | tokens / s (all) | answer tokens / s | collate share | peak GPU memory |",
        "|---|---|---|---|---|",
        f"| {step:.3f} | {tok / step:,.0f} | {ans / step:,.0f} | {100 * collate / (collate + step):.0f}% | {peak:.1f} GiB |",
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
