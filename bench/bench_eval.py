"""Evaluation figures: metric throughput, and SAM refinement time per mask with image-embedding reuse vs without.

Run: `.venv/bin/python bench/bench_eval.py` (or `make bench`); `--skip-base` leaves out the ViT-B-sized SAM
(about 3 minutes on one CPU thread). Uses CUDA when present, else the CPU. Writes bench/results/eval.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

import text4seg as t4s
from text4seg.data.masks import encode_counts
from text4seg.eval.metrics import ReferMetrics, SemanticMetrics
from text4seg.infer.refine import SamRefiner, tiny_sam
from text4seg.protocol.records import decode_counts as decode_rle

OUT = Path(__file__).parent / "results" / "eval.md"
H, W = 480, 640


def blob(rng: np.random.Generator, height: int = H, width: int = W) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    centre = (int(rng.uniform(0.2, 0.8) * width), int(rng.uniform(0.2, 0.8) * height))
    axes = (int(rng.uniform(0.05, 0.3) * width), int(rng.uniform(0.05, 0.3) * height))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return mask.astype(bool)


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_metrics(n: int = 200) -> dict[str, float]:
    rng = np.random.default_rng(0)
    preds = [blob(rng) if k % 10 else np.zeros((H, W), bool) for k in range(n)]
    gts = [blob(rng) if k % 7 else np.zeros((H, W), bool) for k in range(n)]
    boxes = [list(t4s.mask_to_box(g)) if g.any() else [] for g in gts]
    counts = [encode_counts(g) for g in gts]
    label_preds = [rng.integers(0, 21, (H, W)) for _ in range(20)]
    label_gts = [rng.integers(0, 21, (H, W)) for _ in range(20)]

    def refer():
        acc = ReferMetrics()
        for p, g, b in zip(preds, gts, boxes, strict=True):
            acc.update(p, g, b)
        return acc

    def semantic():
        acc = SemanticMetrics(21)
        for p, g in zip(label_preds, label_gts, strict=True):
            acc.update(p, g)

    halves = [ReferMetrics(), ReferMetrics()]
    for k, (p, g, b) in enumerate(zip(preds, gts, boxes, strict=True)):
        halves[k % 2].update(p, g, b)
    state = json.loads(json.dumps(halves[1].state_dict()))

    def merge():
        for _ in range(100):
            ReferMetrics.from_state_dict(halves[0].state_dict()).merge(ReferMetrics.from_state_dict(state))

    def rle():
        for c in counts:
            decode_rle(c, H, W)

    assert (
        ReferMetrics.from_state_dict(halves[0].state_dict())
        .merge(ReferMetrics.from_state_dict(state))
        .compute()
        == refer().compute()
    )
    return {
        "refer_us": best_of(refer) / n * 1e6,
        "semantic_ms": best_of(semantic) / len(label_preds) * 1e3,
        "merge_us": best_of(merge) / 100 * 1e6,
        "rle_us": best_of(rle) / n * 1e6,
    }


def coarse_grids(rng: np.random.Generator, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    return [t4s.mask_to_grid(blob(rng, *size), 16).astype(np.int64) for _ in range(n)]


def bench_refiner(
    model, processor, device: str, images: int, expressions: int, size=(240, 320), warm_up: bool = True
) -> dict:
    """Per-mask refinement time over `images` × `expressions` masks, cache on vs off."""
    rng = np.random.default_rng(1)
    pictures = [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(images)]
    grids = [coarse_grids(rng, expressions, size) for _ in range(images)]
    out = {}
    for name, cache in (("reuse", 8), ("no_reuse", 0)):
        refiner = SamRefiner(model, processor, device=device, iterations=3, cache_size=cache)
        if warm_up:  # the first call pays one-off costs (negligible next to a ViT-B encoder)
            refiner.refine(pictures[0], grids[0][0], key="warm-up")
            refiner.clear_cache()
        refiner.encoder_calls = 0
        embed = decode = 0.0
        start = time.perf_counter()
        for picture, per_image in zip(pictures, grids, strict=True):
            for grid in per_image:
                result = refiner.refine(picture, grid)
                embed += result.seconds["embed"]
                decode += result.seconds["decode"]
        if device == "cuda":
            torch.cuda.synchronize()
        out[name] = (time.perf_counter() - start) / (images * expressions)
        out[f"{name}_encoder_calls"] = refiner.encoder_calls
        out[f"{name}_encode_s"] = embed / max(refiner.encoder_calls, 1)  # per encoder call (cache hits ~0)
        out[f"{name}_decode_s"] = decode / (images * expressions)  # 3 prompt rounds + upsampling, per mask
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=4, help="images for the tiny SAMs (4)")
    parser.add_argument(
        "--expressions", type=int, default=5, help="expressions per image for the tiny SAMs (5)"
    )
    parser.add_argument("--skip-base", action="store_true", help="leave out the ViT-B-sized SAM")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: the CPU here is shared)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = torch.get_num_threads()
    m = bench_metrics()
    print("metrics", m, flush=True)
    rows = []
    for kind in ("sam", "sam2"):
        model, processor = tiny_sam(kind)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        r = bench_refiner(model, processor, device, args.images, args.expressions)
        print(kind, r, flush=True)
        rows.append(
            (
                f"tiny {'SAM' if kind == 'sam' else 'SAM 2'} ({params:.2f}M params)",
                args.images,
                args.expressions,
                r,
            )
        )
    if not args.skip_base:
        from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

        torch.manual_seed(0)
        model = SamModel(SamConfig()).eval()  # the sam-vit-base architecture, random weights (no download)
        processor = SamProcessor(image_processor=SamImageProcessor())
        params = sum(p.numel() for p in model.parameters()) / 1e6
        r = bench_refiner(model, processor, device, 1, 2, size=(480, 640), warm_up=False)
        print("vit-b", r, flush=True)
        rows.append((f"SAM ViT-B size, random weights ({params:.0f}M params, 1024 px)", 1, 2, r))
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else None
    lines = [
        "## Evaluation and SAM refinement",
        "",
        f"Machine: {platform.machine()}, {platform.processor() or 'cpu'}, {threads} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}; device: {gpu or 'CPU'}. "
        "Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_eval.py`. The 2-core CPU was shared with other "
        f"work (load average {os.getloadavg()[0]:.1f} at the end of the run), so timings are noisy, the ViT-B row most.",
        "",
        "### Metric throughput (pure numpy, 640×480)",
        "",
        "| operation | time |",
        "|---|---|",
        f"| referring sample: I/U, IoU, prec@, N/T-acc, box IoU (`ReferMetrics.update`) | {m['refer_us']:.0f} µs |",
        f"| semantic sample, 21 classes (`SemanticMetrics.update`, confusion matrix) | {m['semantic_ms']:.1f} ms |",
        f"| ground-truth mask from COCO RLE (`decode_rle`) | {m['rle_us']:.0f} µs |",
        f"| state round trip + merge of two processes' referring states | {m['merge_us']:.0f} µs |",
        "",
        "### SAM refinement time per mask: image embeddings reused vs recomputed",
        "",
        "3 prompt rounds per mask (coarse 16×16 grid as mask prompt + 3 positive / 3 negative points + box), "
        "random coarse grids; 'reuse' computes each image's embedding once and serves the other expressions "
        "from the cache, 'no reuse' re-encodes the image for every expression.",
        "",
        "| model | images × expressions | reuse (s/mask) | no reuse (s/mask) | speed-up | encoder calls (reuse / no reuse) "
        "| encoder (s/call) | prompts + decoder (s/mask) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, images, exprs, r in rows:
        lines.append(
            f"| {name} | {images} × {exprs} | {r['reuse']:.3f} | {r['no_reuse']:.3f} | "
            f"{r['no_reuse'] / r['reuse']:.1f}× | {r['reuse_encoder_calls']} / {r['no_reuse_encoder_calls']} | "
            f"{r['no_reuse_encode_s']:.3f} | {r['no_reuse_decode_s']:.3f} |"
        )
    lines += [
        "",
        "With E encoder seconds per image and D prompt + decoder seconds per mask, reuse costs E/n + D per mask "
        "for n expressions on an image, against E + D without: the speed-up approaches n where the encoder "
        "dominates, as for the ViT-B-sized SAM here (encoder > 99% of the time on the CPU). "
        + (
            f"Measured on {gpu}."
            if gpu
            else "GPU figures are not measured: no GPU was lent to this task; the script uses CUDA when present."
        ),
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
