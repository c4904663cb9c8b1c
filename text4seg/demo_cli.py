"""`text4seg demo`: run the demo example (examples/demo of a source checkout) — a tiny model learns
synthetic referring segmentation on the CPU. The demo is an example, not part of the library: this
command only finds it and runs it."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
"""The source checkout's examples folder (absent when text4seg is installed from a wheel)."""


def demo_module(examples: Path | None = None) -> ModuleType | None:
    """The example's `demo.run` module (from `examples`, by default `EXAMPLES`), or None when
    `examples/demo` is not there."""
    examples = EXAMPLES if examples is None else examples
    if not (examples / "demo" / "run.py").is_file():
        return None
    if str(examples) not in sys.path:
        sys.path.insert(0, str(examples))
    return importlib.import_module("demo.run")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `demo` sub-command (its options are the example's own)."""
    module = demo_module()
    # without the example, every word after `demo` (options included) is taken, to answer with the error
    parser = subparsers.add_parser(
        "demo",
        help="learn synthetic referring segmentation with a tiny model on the CPU (about 12 minutes)",
        description=(
            "Runs examples/demo: builds a synthetic shapes dataset (OUT/data/records, the records trained "
            "on), fine-tunes a tiny random-initialised model for at most --minutes, evaluates held-out "
            "expressions and writes report.json, predictions.png, loss.png and the model (OUT/model, "
            "loadable by `text4seg predict`). Settings: examples/demo/recipe.yaml and demo.yaml."
        ),
        **({} if module else {"prefix_chars": "\0", "add_help": False}),
    )
    if module is None:
        parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    else:
        module.add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module = demo_module()
    if module is None:
        print(
            f"text4seg demo: the demo example is not installed ({EXAMPLES / 'demo'} not found); "
            "run it from a source checkout of text4seg (git clone, then `make demo`)",
            file=sys.stderr,
        )
        return 2
    return module.run_from_args(args)
