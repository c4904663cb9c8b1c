"""The whole demo: prepare -> train (`text4seg.train`) -> calibrate -> evaluate -> pictures.

    python -m demo.run --out demo_out [--minutes 3] [--set optim.lr=6e-3 --set demo.num_images=2000]

(run from examples/, or `text4seg demo` / `make demo` from the repository root). Writes into OUT:
data/source (the synthetic images), data/records (the records trained on, with text4seg.json),
run/metrics.jsonl (the trainer's log), model/ (the trained model: the trainer's final/ moved, its
text4seg.json completed with the calibrated background bias; `text4seg predict --model OUT/model`
loads it), eval/samples.jsonl, report.json, predictions.png and loss.png.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # `python examples/demo/run.py`: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "demo"

from .settings import DemoSettings, load  # noqa: E402

MODEL_DIR = "model"
RUN_DIR = "run"
REPORT = "report.json"
EXAMPLES_PNG = "predictions.png"
LOSS_PNG = "loss.png"


def _stage(progress: bool, text: str) -> None:
    if progress:
        print(f"[demo] {text}", flush=True)


def spread_sample(records: Any, n: int, seed: int) -> Any:
    """`n` records drawn at random (seeded) across the split, in split order (an image's expressions are
    consecutive, so the first `n` would come from a few dozen images)."""
    if n >= len(records):
        return records
    picked = np.random.default_rng(seed).choice(len(records), size=n, replace=False)
    return records.select(sorted(int(i) for i in picked))


def run_demo(
    out_dir: str | Path, overrides: list[str] | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """Run the whole demo into `out_dir` with recipe.yaml / demo.yaml and `overrides`; returns the report."""
    import torch

    from .prepare import load_records, prepare

    config, demo = load(overrides)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if demo.threads:
        torch.set_num_threads(max(1, min(demo.threads, os.cpu_count() or 1)))
    torch.manual_seed(config.loop.seed)
    if not progress:
        import datasets

        datasets.disable_progress_bars()
    started = time.monotonic()

    _stage(progress, f"1/5 data: {demo.num_images} synthetic images -> {out / 'data' / 'records'}")
    records = prepare(out, config, demo, progress)
    model_dir, result = _train(out, records, config, demo, progress)

    seed = config.loop.seed
    held_out = spread_sample(load_records(out, "test"), demo.eval_samples, seed)
    validation = spread_sample(load_records(out, "val"), demo.calibration_samples, seed)
    _stage(progress, f"4/5 evaluate: {len(held_out)} held-out expressions")
    scores = _evaluate(out, model_dir, held_out, validation, demo, progress)

    _stage(progress, "5/5 pictures")
    losses = _pictures(out, held_out, scores, result.metrics_path, demo)
    report = {
        **scores["summary"],
        "held_out": len(held_out),
        "train_records": len(load_records(out, "train")),
        "steps": result.steps,
        "minutes": result.seconds / 60,
        "steps_per_second": result.steps / result.seconds if result.seconds else None,
        "stopped": result.stopped,
        "final_loss": float(np.mean(losses[-5:])) if losses else None,
        "parameters": result.total_parameters,
        "total_minutes": (time.monotonic() - started) / 60,
        "config": {"train": config.to_dict(), "demo": demo.__dict__},
        "model_dir": MODEL_DIR,
        "records_dir": str(records.relative_to(out)),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _budget(loop: Any) -> str:
    """The training budget in words: minutes, steps or both (`loop.max_minutes=null` trains by steps)."""
    parts = [f"{loop.max_minutes:g} min"] if loop.max_minutes is not None else []
    parts += [f"{loop.max_steps} steps"] if loop.max_steps is not None else []
    return "at most " + " or ".join(parts) if parts else f"{loop.epochs:g} epochs"


def _train(out: Path, records: Path, config: Any, demo: DemoSettings, progress: bool) -> tuple[Path, Any]:
    """Train on the saved records; the trainer's final/ becomes OUT/model (the one saved model)."""
    import datasets

    from .model import make_model

    train_records = datasets.load_from_disk(str(records))["train"]
    _stage(progress, f"2/5 model: tiny random-initialised {config.model.name_or_path}")
    model, processor = make_model(config, demo, train_records)
    run_dir, model_dir = out / RUN_DIR, out / MODEL_DIR
    shutil.rmtree(run_dir, ignore_errors=True)
    config.data.path, config.output.dir = str(records), str(run_dir)
    config.loop.progress = progress
    where = f"{demo.processes} processes" if demo.processes > 1 else "one process"
    _stage(
        progress,
        f"3/5 train: {_budget(config.loop)} on {len(train_records)} records (in saved order, {where})",
    )
    if demo.processes > 1:
        result = _train_launched(out, config, demo, model, processor)
    else:
        from text4seg.train import train

        result = train(config, model=model, processor=processor)
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(result.final_dir, model_dir)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a second copy of the model's weights
    return model_dir, result


def _train_launched(out: Path, config: Any, demo: DemoSettings, model: Any, processor: Any) -> Any:
    """Train with `accelerate launch` on `demo.processes` CPU processes (gloo), one torch thread each:
    the demo's model is saved as it starts (OUT/init), the recipe written beside it (OUT/run.yaml) and
    `python -m text4seg.train` run on it, exactly as a user would. The global batch stays
    `loop.batch_size`, split between the processes."""
    import subprocess
    from types import SimpleNamespace

    import yaml

    from text4seg.train.loop import METRICS_FILE

    n = demo.processes
    if config.loop.batch_size % n:
        raise ValueError(f"loop.batch_size={config.loop.batch_size} does not split over demo.processes={n}")
    init = out / "init"
    shutil.rmtree(init, ignore_errors=True)
    model.save_pretrained(init, safe_serialization=True)
    processor.save_pretrained(init)
    recipe = config.to_dict()
    recipe["model"] = {**recipe["model"], "name_or_path": str(init), "tiny": {}}
    recipe["loop"] = {**recipe["loop"], "batch_size": config.loop.batch_size // n}
    (out / "run.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="true")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "text4seg.train", str(out / "run.yaml"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise RuntimeError(
            f"training under accelerate launch failed (exit {proc.returncode}): {' '.join(cmd)}"
        )
    summary = json.loads([line for line in proc.stdout.splitlines() if line.startswith('{"steps"')][-1])
    shutil.rmtree(init, ignore_errors=True)
    run_dir = Path(config.output.dir)
    return SimpleNamespace(
        final_dir=Path(summary["final_dir"]), steps=summary["steps"], seconds=summary["seconds"],
        stopped=summary["stopped"], metrics_path=run_dir / METRICS_FILE,
        total_parameters=sum(p.numel() for p in model.parameters()),
    )  # fmt: skip


def _evaluate(
    out: Path, model_dir: Path, held_out: Any, validation: Any, demo: DemoSettings, progress: bool
) -> dict[str, Any]:
    """Evaluate OUT/model as `text4seg predict` loads it: calibrate the background bias on val (saved into
    the model's text4seg.json), then score the held-out expressions."""
    from text4seg.eval.calibrate import calibrate_background_bias
    from text4seg.eval.evaluate import evaluate
    from text4seg.infer import Segmenter
    from text4seg.protocol.asking import Asking

    segmenter = Segmenter.from_pretrained(model_dir, device="cpu", constrained=demo.constrained)
    calibration, unbiased = None, None
    if demo.background_bias is None and len(validation):
        _stage(progress, f"    background bias: calibrating on {len(validation)} val expressions")
        calibration = calibrate_background_bias(segmenter, validation)
        segmenter.background_bias = 0.0
        unbiased = evaluate(segmenter, held_out, split="test", batch_size=8, progress=False).refer_coarse()
    bias = calibration.bias if calibration else float(demo.background_bias or 0.0)
    segmenter.background_bias = bias
    replace(Asking.load(model_dir) or Asking(), background_bias=bias).save(model_dir)
    report = evaluate(
        segmenter, held_out, split="test", batch_size=8, out_dir=out / "eval", progress=progress
    )
    coarse = report.refer_coarse()  # bilinear upsampling: comparable with every earlier demo run
    groups = report.metrics.get("refer") or {}
    guided = (groups.get("all") or next(iter(groups.values()), {})).get("guided")
    baseline, ceiling = reference_scores(held_out, upsample="bilinear")
    summary = {
        "gIoU": coarse["gIoU"],
        "cIoU": coarse["cIoU"],
        "prec@0.5": coarse.get("prec@0.5"),
        "baseline": {"gIoU": baseline["gIoU"], "cIoU": baseline["cIoU"], "what": "all-background answer"},
        "ceiling": {
            "gIoU": ceiling["gIoU"],
            "cIoU": ceiling["cIoU"],
            "what": "ground truth through the 16x16 descriptor and back",
        },
        "background_bias": bias,
        "calibration": (
            {"metric": calibration.metric, "val_scores": calibration.scores, "val_samples": len(validation)}
            if calibration
            else None
        ),
        "without_bias": {"gIoU": unbiased["gIoU"], "cIoU": unbiased["cIoU"]} if unbiased else None,
        "repaired_outputs": report.info.get("repaired_outputs"),
        "guided": {"gIoU": guided["gIoU"], "cIoU": guided["cIoU"]} if guided else None,
    }
    return {"summary": summary, "samples": report.samples, "upsample": segmenter.upsample}


def reference_scores(records: Any, upsample: str = "bilinear") -> tuple[dict[str, float], dict[str, float]]:
    """gIoU/cIoU of the all-background answer and of the ground truth passed through the codec."""
    import text4seg as t4s
    from text4seg.eval.metrics import ReferMetrics
    from text4seg.protocol.records import ground_truth

    baseline, ceiling = ReferMetrics(), ReferMetrics()
    for record in records:
        truth = ground_truth(record)
        baseline.update(np.zeros_like(truth.mask), truth.mask, box=False)
        grid = t4s.decode(t4s.encode_mask(truth.mask, "target")).grid != 0
        image = record["images"][0].convert("RGB") if upsample == "guided" else None  # guided needs the image
        coarse = t4s.grid_to_mask(grid, truth.mask.shape, method=upsample, image=image)
        ceiling.update(np.asarray(coarse, dtype=bool), truth.mask, box=False)
    return baseline.compute(), ceiling.compute()


def _pictures(
    out: Path, held_out: Any, scores: dict[str, Any], metrics: Path, demo: DemoSettings
) -> list[float]:
    """predictions.png (a sheet of held-out predictions) and loss.png; returns the logged losses."""
    from text4seg import viz

    _examples_sheet(held_out, scores["samples"], demo.examples, scores["upsample"]).save(out / EXAMPLES_PNG)
    steps, losses = _loss_history(metrics)
    plot = viz.line_plot(steps, {"training loss": losses}, title="training loss (answer tokens)", log_y=True)
    plot.save(out / LOSS_PNG)
    return losses


def _examples_sheet(records: Any, samples: list[dict[str, Any]], k: int, upsample: str) -> Any:
    import text4seg as t4s
    from text4seg import viz
    from text4seg.protocol.records import ground_truth

    examples = []
    for line in samples[:k]:
        record = records[int(line["index"])]
        truth = ground_truth(record)
        image = record["images"][0].convert("RGB")
        try:
            grid = t4s.decode(line["text"] or "").grid != 0
            pred = t4s.grid_to_mask(grid, truth.mask.shape, method=upsample, image=image)
        except ValueError:
            pred = np.zeros_like(truth.mask)
        iou = (line.get("coarse") or {}).get("iou")
        examples.append(
            viz.Example(image, truth.mask, np.asarray(pred, bool), str(record["expression"]), iou)
        )
    return viz.comparison_sheet(examples, tile=128, columns=2)


def _loss_history(path: Path) -> tuple[list[float], list[float]]:
    steps, losses = [], []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if "loss" in entry and "step" in entry and math.isfinite(float(entry["loss"])):
                steps.append(float(entry["step"]))
                losses.append(float(entry["loss"]))
    return steps, losses


def format_summary(report: dict[str, Any]) -> str:
    """The lines `text4seg demo` prints at the end."""
    base, ceil, unbiased = report["baseline"], report["ceiling"], report.get("without_bias")
    bias = (
        [
            f"  background bias {report['background_bias']:g} (chosen on val); without it gIoU "
            f"{unbiased['gIoU']:.3f}  cIoU {unbiased['cIoU']:.3f}"
        ]
        if report.get("background_bias") and unbiased
        else []
    )
    return "\n".join(
        [
            f"held-out gIoU {report['gIoU']:.3f}  cIoU {report['cIoU']:.3f}  ({report['held_out']} expressions)",
            *bias,
            *(
                [f"  guided upsampling (the segmenter's default) gIoU {g['gIoU']:.3f}  cIoU {g['cIoU']:.3f}"]
                if (g := report.get("guided"))
                else []
            ),
            f"  all-background baseline gIoU {base['gIoU']:.3f}  cIoU {base['cIoU']:.3f}",
            f"  16x16 ceiling (codec)   gIoU {ceil['gIoU']:.3f}  cIoU {ceil['cIoU']:.3f}",
            f"  {report['steps']} steps in {report['minutes']:.1f} min ({report['steps_per_second']:.2f} steps/s)",
        ]
    )


# ------------------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (shared by `text4seg demo` and `python -m demo.run`)."""
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--minutes", type=float, default=None, help="training budget (loop.max_minutes, 10)")
    parser.add_argument("--seed", type=int, default=None, help="seed of data, model and training (default 0)")
    parser.add_argument(
        "--num-images", type=int, default=None, help="synthetic images to draw (default 6000)"
    )
    parser.add_argument(
        "--eval-samples", type=int, default=None, help="held-out expressions to score (default 500)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 2; 1 when another run shares the CPU)",
    )
    parser.add_argument("--no-constrained", action="store_true", help="evaluate with free generation")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe.yaml key (optim.lr=6e-3) or a demo.yaml one (demo.num_images=2000); repeatable",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The parsed options as recipe / demo overrides (the named options win over --set)."""
    items = list(args.overrides)
    if args.minutes is not None:
        if args.minutes <= 0:
            raise ValueError("--minutes must be > 0")
        items.append(f"loop.max_minutes={args.minutes}")
    if args.seed is not None:
        items += [f"loop.seed={args.seed}", f"model.tiny.seed={args.seed}"]
    named = {"num_images": args.num_images, "eval_samples": args.eval_samples, "threads": args.threads}
    items += [f"demo.{key}={value}" for key, value in named.items() if value is not None]
    if args.no_constrained:
        items.append("demo.constrained=false")
    return items


def run_from_args(args: argparse.Namespace) -> int:
    """Run the demo as the parsed options say and print its summary; 2 with an `error:` line on bad options."""
    from text4seg.train.config import ConfigError

    try:
        overrides = overrides_of(args)
        load(overrides)  # bad keys and values fail here, before any work
    except (ValueError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = run_demo(args.out, overrides, progress=not args.quiet)
    print(format_summary(report))
    out = Path(args.out)
    for name, path in (
        ("report", REPORT),
        ("examples", EXAMPLES_PNG),
        ("loss", LOSS_PNG),
        ("model", MODEL_DIR),
    ):
        print(f"  {name}: {out / path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo.run", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
