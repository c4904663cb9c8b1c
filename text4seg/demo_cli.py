"""`text4seg demo`: train a tiny model on synthetic shapes within minutes on the CPU and report how well it segments."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` sub-command."""
    parser = subparsers.add_parser(
        "demo",
        help="learn synthetic referring segmentation with a tiny model on the CPU (about 12 minutes)",
        description=(
            "Builds a synthetic shapes dataset, fine-tunes a tiny random-initialised model for at most "
            "--minutes, evaluates held-out expressions and writes report.json, predictions.png, loss.png "
            "and the model (OUT/model, loadable by `text4seg predict`)."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default demo_out)")
    parser.add_argument("--minutes", type=float, default=None, help="training budget in minutes (default 10)")
    parser.add_argument("--seed", type=int, default=None, help="seed of data, model and training (default 0)")
    parser.add_argument(
        "--num-images", type=int, default=None, help="synthetic images to draw (default 6000)"
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="held-out expressions to score, drawn across the test split (default 500)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 2, at most the CPU count; 1 when another run shares the CPU)",
    )
    parser.add_argument(
        "--no-constrained", action="store_true", help="evaluate with free generation instead of the grammar"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any DemoConfig field (YAML value), e.g. --set merge=2 --set lr=0.006; repeatable",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from text4seg.demo import DemoConfig, apply_overrides, format_summary, run_demo

    cfg = DemoConfig()
    try:
        apply_overrides(cfg, args.overrides)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from err
    for name, key in (
        ("minutes", "minutes"),
        ("seed", "seed"),
        ("num_images", "num_images"),
        ("eval_samples", "eval_samples"),
        ("threads", "threads"),
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, key, value)
    if args.minutes is not None and args.minutes <= 0:
        raise SystemExit("error: --minutes must be > 0")
    cfg.constrained = not args.no_constrained
    result = run_demo(args.out, cfg, progress=not args.quiet)
    print(format_summary(result.report))
    for name, path in result.files.items():
        print(f"  {name}: {path}")
    return 0
