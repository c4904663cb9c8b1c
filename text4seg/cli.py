"""`text4seg` command line: one sub-command per job, each defined next to the code it drives.

Each module listed in `COMMANDS` exposes `register(subparsers)` (adds its parser, sets `func`) and
keeps heavy imports (torch, transformers, datasets) inside the function that runs the command, so
`text4seg --help` stays instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, str] = {
    "encode": "text4seg.codec.cli",
    "decode": "text4seg.codec.cli",
    "build": "text4seg.data.cli",
    "train": "text4seg.train.cli",
    "train-refiner": "text4seg.train.refiner_cli",
    "predict": "text4seg.infer.cli",
    "evaluate": "text4seg.eval.cli",
    "demo": "text4seg.demo_cli",
    "convert": "text4seg.models.convert_cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="text4seg", description="Segmentation as text for multimodal LLMs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in dict.fromkeys(COMMANDS.values()):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        module.register(sub)
    return parser


def undecodable_argument(argv: list[str]) -> str | None:
    """A one-line complaint about the first argument that is not valid UTF-8 (Python keeps such bytes of
    the command line as lone surrogates), or None when every argument is text."""
    for position, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return f"argument {position} ({_raw(arg)!r:.80}) is not valid UTF-8; give paths and text in UTF-8"
    return None


def _raw(arg: str) -> bytes:
    """The bytes the shell passed (surrogate-escaped bytes restored; other lone surrogates escaped)."""
    try:
        return arg.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return arg.encode("utf-8", "backslashreplace")


def main(argv: list[str] | None = None) -> int:
    """Run `text4seg COMMAND ...` (`argv` defaults to the command line); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    problem = undecodable_argument(argv)
    if problem is not None:
        print(f"text4seg: {problem}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
