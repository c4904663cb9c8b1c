"""`text4seg train RECIPE [key=value ...]` and `python -m text4seg.train RECIPE [key=value ...]`.

The same entry point works under `accelerate launch` (one process per device), e.g.
`accelerate launch --config_file recipes/accelerate/zero2.yaml -m text4seg.train recipes/qwen2_5_vl_3b.yaml`;
on CPUs, `ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m text4seg.train ...` runs
two gloo processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML (see recipes/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override recipe entries by dotted path, e.g. optim.lr=1e-4 loop.max_steps=100 data.path=data/refcoco",
    )
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved config as JSON and exit"
    )


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


def run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        config = load_config(args.recipe, args.overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    from text4seg.distributed import processes_session

    from .trainer import train

    with processes_session():
        result = train(config)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(
        json.dumps(
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
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m text4seg.train", description="Fine-tune on descriptor records."
    )
    _add_arguments(parser)
    return run(parser.parse_args(argv))
