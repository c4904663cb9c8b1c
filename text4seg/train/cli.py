"""`text4seg train RECIPE [key=value ...]` and `python -m text4seg.train RECIPE [key=value ...]`.

The same entry point works under `accelerate launch` (one process per device), e.g.
`accelerate launch --config_file recipes/accelerate/zero2.yaml -m text4seg.train recipes/qwen2_5_vl_3b.yaml`;
on CPUs, `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m text4seg.train ...` runs
two gloo processes.

The recipe, the data folder, its splits and columns are checked before the model is loaded, and every
user mistake (a bad key or value, a missing dataset/split/column, a broken checkpoint, a loss that is not
finite) ends in one `error:` line and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

# Options of other trainers (TRL, HF Trainer) that people type by habit -> the override that does it here.
HABITS = {
    "--config": None,  # the recipe is the positional argument
    "--lr": "optim.lr",
    "--learning_rate": "optim.lr",
    "--learning-rate": "optim.lr",
    "--weight_decay": "optim.weight_decay",
    "--warmup_steps": "optim.warmup_steps",
    "--max_steps": "loop.max_steps",
    "--num_train_epochs": "loop.epochs",
    "--per_device_train_batch_size": "loop.batch_size",
    "--gradient_accumulation_steps": "loop.grad_accum",
    "--seed": "loop.seed",
    "--model_name_or_path": "model.name_or_path",
    "--dataset_name": "data.path",
    "--output_dir": "output.dir",
    "--lora_r": "finetune.lora_r",
}


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe YAML (see recipes/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override recipe entries by dotted path, e.g. optim.lr=1e-4 loop.max_steps=100 data.path=data/refcoco",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as JSON and exit"
    )
    for flag in HABITS:  # accepted only to answer with the right spelling
        parser.add_argument(flag, dest=f"habit_{flag.lstrip('-')}", default=None, help=argparse.SUPPRESS)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` sub-command to the text4seg CLI."""
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a multimodal LLM on descriptor records",
        description="Fine-tune any image-text-to-text model (LoRA or full) on records written by `text4seg build`. "
        "Outputs metrics.jsonl, atomic checkpoints (resumed automatically) and final/ (adapter + processor).",
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)


def habit_hint(args: argparse.Namespace) -> str | None:
    """The one-line answer to an option of another trainer (`--config X.yaml`, `--lr 1e-4`), else None."""
    for flag, key in HABITS.items():
        value = getattr(args, f"habit_{flag.lstrip('-')}", None)
        if value is None:
            continue
        if key is None:
            return f"{flag} is not an option: the recipe is the first argument (text4seg train {value} [key=value ...])"
        return f"{flag} is not an option: settings are overrides after the recipe (text4seg train RECIPE {key}={value})"
    if args.recipe is None:
        return "name a recipe: text4seg train RECIPE.yaml [key=value ...] (see recipes/)"
    return None


def _summary(result: Any) -> str:
    return json.dumps(
        {
            "steps": result.steps,
            "stopped": result.stopped,
            "final_loss": result.losses[-1] if result.losses else None,
            "eval_loss": result.eval_losses[-1][1] if result.eval_losses else None,
            "skipped": len(result.skipped),
            "final_dir": str(result.final_dir) if result.final_dir else None,
            "seconds": round(result.seconds, 1),
        }
    )


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    hint = habit_hint(args)
    if hint:
        print(f"error: {hint}", file=sys.stderr)
        return 2
    try:
        config = load_config(args.recipe, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    from text4seg.distributed import processes_session

    from .trainer import CheckpointError, DataError, NonFiniteLossError, train

    try:
        with processes_session():
            result = train(config)
    except (DataError, CheckpointError, NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, DataError) else 1
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(_summary(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m text4seg.train", description="Fine-tune on descriptor records."
    )
    _add_arguments(parser)
    return run(parser.parse_args(argv))
