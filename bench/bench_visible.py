"""Whole-image modes measured: squash vs pad vs crop with a crop-type processor (issue 14, item 1).

llava-hf's LLaVA-1.5 image processor (and the tiny LLaVA's `CLIPImageProcessor`) resizes the shortest
edge and center-crops a square, hiding the sides of a wide image while the descriptor covers all of it.
`models.preprocess.make_visible` offers `squash` (resize to the square, Text4Seg's choice), `pad` (pad to
a square with the mean colour, then resize) and `crop` (the stock processor). This bench trains the same
tiny random LLaVA for the same number of steps under each mode on the same 4:3 synthetic referring
records and scores the held-out split with `text4seg evaluate`.

Run: `.venv/bin/python bench/bench_visible.py [--steps 500] [--images 400]` (about 5 minutes per mode
at 1 torch thread on a quiet core). Writes bench/results/visible.md; the models under bench/_work/visible
are deleted afterwards (`--keep` keeps them; logs, metrics.jsonl and the evaluation reports stay).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "_work" / "visible"
OUT = ROOT / "bench" / "results" / "visible.md"
MODES = ("squash", "pad", "crop")
IMAGE_SIZE = (128, 96)  # W, H: a 4:3 image, as a 640x480 photo
EXE = [sys.executable, "-m", "text4seg"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def recipe(data: Path, out: Path, mode: str, steps: int, model_side: int) -> dict:
    """The one training recipe, differing only in `visible`."""
    return {
        "model": {
            "name_or_path": "tiny:llava",
            "tiny": {
                "seed": 0,
                "image_size": model_side,
                "patch_size": 8,
                "hidden_size": 128,
                "num_layers": 2,
                "num_heads": 4,
                "vision_hidden_size": 64,
                "vision_layers": 2,
                "visible": mode,
            },
        },
        "data": {"path": str(data), "train_split": "train", "eval_split": None, "max_length": 1024},
        "finetune": {
            "method": "full",
            "train_vision": True,
            "train_projector": True,
            "vision_lr": 3.0e-4,
            "projector_lr": 1.0e-3,
        },
        "optim": {
            "lr": 3.0e-3,
            "warmup_steps": 50,
            "scheduler": "cosine",
            "min_lr_ratio": 0.05,
            "weight_decay": 0.0,
        },
        "loop": {
            "batch_size": 8,
            "max_steps": steps,
            "epochs": 1000.0,
            "max_minutes": None,
            "log_every": 50,
            "eval_every": None,
            "save_every": None,
            "seed": 0,
        },
        "output": {"dir": str(out), "resume": False},
    }


def run(cmd: list[str], log: Path) -> float:
    """Run `cmd` (one torch thread), its output to `log`; returns its wall seconds; stops on failure."""
    started = time.monotonic()
    with log.open("w") as f:
        done = subprocess.run(cmd, cwd=ROOT, env=ENV, stdout=f, stderr=subprocess.STDOUT)
    if done.returncode:
        sys.exit(f"error: {' '.join(cmd)} failed ({done.returncode}); see {log}")
    return time.monotonic() - started


def build_data(images: int) -> Path:
    data = WORK / "data"
    if not (data / "refcoco").is_dir():
        cmd = [*EXE, "build", "synthetic", "--num-images", str(images), "--image-size", *map(str, IMAGE_SIZE)]
        run([*cmd, "--kinds", "refcoco", "--out", str(data), "--quiet"], WORK / "build.log")
    return data / "refcoco"


def train_and_evaluate(data: Path, mode: str, steps: int, model_side: int, limit: int) -> dict:
    """Train one mode, evaluate its final model on the test split; returns the figures."""
    import yaml

    run_dir = WORK / mode
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    path = run_dir / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(data, run_dir / "run", mode, steps, model_side)))
    train_s = run([*EXE, "train", str(path)], run_dir / "train.log")
    report_dir = run_dir / "eval"
    cmd = [*EXE, "evaluate", str(run_dir / "run" / "final"), "--data", str(data), "--split", "test"]
    cmd += ["--device", "cpu", "--limit", str(limit), "--out", str(report_dir), "--quiet"]
    eval_s = run(cmd, run_dir / "evaluate.log")
    return {"mode": mode, "train_s": train_s, "eval_s": eval_s, **scores(report_dir), **losses(run_dir)}


def scores(report_dir: Path) -> dict:
    report = json.loads(next(report_dir.glob("*.json")).read_text())
    refer = report["metrics"]["refer"]
    group = refer.get("all") or next(iter(refer.values()))
    return {
        "gIoU": group["coarse"]["gIoU"],
        "cIoU": group["coarse"]["cIoU"],
        "guided_gIoU": group["guided"]["gIoU"],
        "samples": report.get("info", {}).get("samples", report.get("samples")),
    }


def losses(run_dir: Path) -> dict:
    lines = [json.loads(x) for x in (run_dir / "run" / "metrics.jsonl").read_text().splitlines() if x]
    train = [x["loss"] for x in lines if "loss" in x]
    return {
        "final_loss": sum(train[-3:]) / max(1, len(train[-3:])),
        "steps": len(train) and lines[-1].get("step"),
    }


def geometry(data: Path, limit: int) -> dict[str, dict[str, float]]:
    """Per mode, on the scored test records: the mean share of a target's pixels inside the model's view and
    the share of the model's image tokens that show the image (pure geometry of each mode)."""
    import numpy as np

    from text4seg.protocol.records import ground_truth, load_records

    test = load_records(data)["test"]
    test = test.select(range(min(limit, len(test))))
    shares = []
    for record in test.remove_columns([c for c in test.column_names if c == "image"]):
        mask = ground_truth(record).mask
        height, width = mask.shape
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        total = mask.sum()
        if total:
            shares.append(mask[top : top + side, left : left + side].sum() / total)
    crop = float(np.mean(shares)) if shares else 1.0
    lost = float(np.mean([s < 0.5 for s in shares])) if shares else 0.0
    w, h = IMAGE_SIZE
    return {
        "squash": {"target_visible": 1.0, "targets_mostly_hidden": 0.0, "tokens_on_image": 1.0},
        "pad": {
            "target_visible": 1.0,
            "targets_mostly_hidden": 0.0,
            "tokens_on_image": min(w, h) / max(w, h),
        },
        "crop": {"target_visible": crop, "targets_mostly_hidden": lost, "tokens_on_image": 1.0},
    }


def write(results: list[dict], args: argparse.Namespace, load: tuple[float, ...], geo: dict) -> None:
    rows = [
        f"| {r['mode']} | {geo[r['mode']]['target_visible']:.3f} | {geo[r['mode']]['targets_mostly_hidden']:.3f} | "
        f"{geo[r['mode']]['tokens_on_image']:.2f} | {r['steps']} | {r['final_loss']:.3f} | {r['gIoU']:.3f} | "
        f"{r['cIoU']:.3f} | {r['guided_gIoU']:.3f} | {r['train_s'] / 60:.1f} |"
        for r in results
    ]
    text = "\n".join(
        [
            "## Whole-image modes: squash vs pad vs crop (bench/bench_visible.py)",
            "",
            f"Command: `.venv/bin/python bench/bench_visible.py --steps {args.steps} --images {args.images} "
            f"--model-side {args.model_side} --limit {args.limit}`",
            f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared with other "
            f"engineers, load average at the start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
            "one torch thread per run.",
            f"Data: `text4seg build synthetic --image-size {IMAGE_SIZE[0]} {IMAGE_SIZE[1]} --num-images "
            f"{args.images} --kinds refcoco` (4:3 images, 16x16 descriptors); scored on the test split "
            f"({args.limit} expressions at most).",
            f"Model: tiny random LLaVA (CLIP vision tower, {args.model_side} px input, patch 8), full "
            f"fine-tune, {args.steps} steps of batch 8, lr 3e-3 cosine, the same seed for every mode. "
            "Its stock processor (CLIPImageProcessor) resizes the shortest edge and center-crops a "
            "square: on a 4:3 image `crop` hides 25% of the width (12.5% on each side).",
            "",
            "Geometry columns (no model): the mean share of a scored target's pixels inside the model's "
            "view, the share of targets with less than half of their pixels visible, and the share of the "
            "model's image tokens that show the image (pad spends the rest on padding).",
            "",
            "| mode | target pixels seen | targets mostly hidden | tokens on image | steps | loss (last 3 logs) "
            "| gIoU | cIoU | gIoU (guided) | train min |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    OUT.write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="training steps per mode (500)")
    parser.add_argument("--images", type=int, default=400, help="synthetic images to draw (400)")
    parser.add_argument("--model-side", type=int, default=64, help="the model's square input side (64)")
    parser.add_argument("--limit", type=int, default=200, help="held-out expressions scored (200)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--keep", action="store_true", help="keep the trained models under bench/_work")
    args = parser.parse_args()
    load = os.getloadavg()
    WORK.mkdir(parents=True, exist_ok=True)
    data = build_data(args.images)
    results = []
    for mode in args.modes:
        results.append(train_and_evaluate(data, mode, args.steps, args.model_side, args.limit))
        print(json.dumps(results[-1]), flush=True)
        if not args.keep:  # the model files go; the logs, metrics.jsonl and eval report stay
            for weights in ("final", "checkpoints"):
                shutil.rmtree(WORK / mode / "run" / weights, ignore_errors=True)
    write(results, args, load, geometry(data, args.limit))


if __name__ == "__main__":
    main()
