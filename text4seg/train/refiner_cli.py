"""`text4seg train-refiner --data DIR --out PATH`: train the light learned refiner on records from
`text4seg build` (`text4seg.train.light_refiner`); use it with `predict|evaluate --refine light:PATH`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def _positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: `kind(text)`, refused unless positive."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `train-refiner` to the `text4seg` command line."""
    p = subparsers.add_parser(
        "train-refiner",
        help="train the light learned refiner (CPU, minutes) for --refine light:PATH",
        description=__doc__,
    )
    p.add_argument("--data", required=True, help="a dataset folder written by `text4seg build`")
    p.add_argument("--split", default="train", help="the split to train on (train)")
    p.add_argument("--out", required=True, help="folder to write model.safetensors and light_refiner.json to")
    p.add_argument("--minutes", type=_positive(float), default=8.0, help="CPU minutes of training (8)")
    p.add_argument("--steps", type=_positive(int), default=None, help="stop after this many steps")
    p.add_argument("--limit", type=_positive(int), default=None, help="use at most this many records")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        return _fail(f"--out {out}: is a file, not a folder")
    try:
        records = _records(args)
        return _train(args, records, out)
    except (ValueError, OSError) as err:  # DataError, RecordError, ImageReadError are ValueErrors
        return _fail(str(err).splitlines()[0])


def _records(args: argparse.Namespace):
    from text4seg.train.data import DataError, open_folder

    data = open_folder(args.data, "--data")
    if hasattr(data, "keys"):
        if args.split not in data:
            raise DataError(f"--data {args.data} has no split {args.split!r} (it has {', '.join(data)})")
        data = data[args.split]
    return data.select(range(min(args.limit, len(data)))) if args.limit else data


def _train(args: argparse.Namespace, records, out) -> int:
    import torch

    from text4seg.models.light_refiner import LightRefinerConfig, save_light_refiner
    from text4seg.train.light_refiner import RefinerTraining, examples_from_records, train_light_refiner

    torch.set_num_threads(1)
    config = LightRefinerConfig()
    examples = examples_from_records(records, config)
    print(f"{len(examples)} training examples from {len(records)} records", flush=True)
    training = RefinerTraining(cpu_seconds=args.minutes * 60, steps=args.steps, seed=args.seed)
    net, info = train_light_refiner(
        examples,
        config,
        training,
        progress=lambda step, loss: print(f"step {step}: loss {loss:.4f}", flush=True),
    )
    save_light_refiner(
        net, out, {**info, "data": str(args.data), "split": args.split, "examples": len(examples)}
    )
    print(f"wrote {out} ({info['steps']} steps, {info['cpu_seconds']:.0f} CPU s, loss {info['loss']:.4f})")
    return 0


def _fail(message: str) -> int:
    print(f"text4seg train-refiner: {message}", file=sys.stderr)
    return 2
