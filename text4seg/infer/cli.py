"""`text4seg predict MODEL IMAGE "expression" --out mask.png`: one prediction from the shell."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from text4seg.infer.model_args import (
    ArgsError,
    add_model_args,
    add_refine_args,
    check_output_file,
    grid_side,
    load_segmenter,
    one_line,
    preflight,
    refiner_from_args,
)
from text4seg.protocol.asking import UPSAMPLE_METHODS

PROG = "text4seg predict"
MAX_PNG_CLASSES = 255
"""The most classes `--classes` takes: the mask PNG stores label values 1..255."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `predict` sub-command."""
    p = subparsers.add_parser(
        "predict",
        help="segment an image for a referring expression (or class list) with a trained model",
        description=(
            "Run a text4seg model on one image, write the mask as a PNG and print the descriptor the model "
            "wrote, the repairs decoding made and the box. Generation is grammar-constrained by default. "
            "Inputs (expression, output paths, model and SAM sources, text4seg.json, image size) are checked "
            "before the model loads."
        ),
    )
    add_model_args(p)
    p.add_argument("image", help="image file (any mode PIL reads; EXIF orientation is honoured)")
    p.add_argument(
        "expression",
        help="referring expression, or comma-separated class names with --classes (each at most "
        "text4seg.infer.prompts.MAX_EXPRESSION_CHARS = 500 characters)",
    )
    p.add_argument(
        "--out", required=True, help="where to write the mask PNG (0/255; label values with --classes)"
    )
    p.add_argument(
        "--grid",
        type=grid_side,
        default=None,
        help="descriptor grid size the model was trained with (default: the model's text4seg.json, else 16)",
    )
    p.add_argument("--classes", action="store_true", help="treat EXPRESSION as a comma-separated class list")
    p.add_argument(
        "--upsample",
        choices=UPSAMPLE_METHODS,
        default=None,
        help="grid to image size: guided (outlines follow the image's edges), bilinear or nearest "
        "(default: the model's text4seg.json, else guided)",
    )
    add_refine_args(p)
    p.add_argument("--json", default=None, metavar="PATH", help="also write a JSON summary of the prediction")
    p.set_defaults(func=run)


def _write_mask(result, path: Path, classes: bool) -> None:
    import numpy as np
    from PIL import Image

    if classes:
        if int(result.label_map.max(initial=0)) > MAX_PNG_CLASSES:
            raise SystemExit(f"{PROG}: more than {MAX_PNG_CLASSES} classes do not fit an 8-bit PNG")
        array = result.label_map.astype(np.uint8)
    else:
        array = result.mask.astype(np.uint8) * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode="L").save(path)


def _target(args: argparse.Namespace) -> str | list[str]:
    """The expression or class list, checked as the model will be asked (ValueError when refused)."""
    from text4seg.infer.prompts import make_query

    target: str | list[str] = args.expression
    if args.classes:
        target = [c.strip() for c in args.expression.split(",") if c.strip()]
        if len(target) > MAX_PNG_CLASSES:
            raise ArgsError(
                f"{len(target)} classes do not fit the 8-bit mask PNG (at most {MAX_PNG_CLASSES})"
            )
    make_query(target)
    return target


def _prepare(args: argparse.Namespace) -> tuple[str | list[str], object]:
    """Every check that needs no model, cheapest first; returns the target and the upright RGB image."""
    from text4seg.protocol.images import load_image

    target = _target(args)
    check_output_file(args.out, "--out")
    check_output_file(args.json, "--json")
    preflight(args)
    return target, load_image(args.image)


def run(args: argparse.Namespace) -> int:
    try:
        target, image = _prepare(args)
        refiner = refiner_from_args(args, args.device)
        segmenter = load_segmenter(
            args, grid=args.grid, device=args.device, refiner=refiner, upsample=args.upsample, prog=PROG
        )
        result = segmenter.segment(image, target)
    except (ArgsError, OSError, ValueError) as err:
        print(f"{PROG}: {one_line(err)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    _write_mask(result, out, args.classes)
    print(result.text)
    for repair in result.repairs:
        print(f"repaired: {repair}")
    if not result.repairs:
        print("repairs: none (well-formed descriptor)")
    print(f"box: {list(result.box) if result.box else None}")
    print(
        f"tokens: {result.new_tokens}, forward passes: {result.forward_passes}, "
        f"generate: {result.timings['generate']:.3f} s"
    )
    if result.refinement is not None and getattr(result.refinement, "kept_coarse", False):
        print("refinement: kept the coarse mask for at least one label (SAM disagreed too much)")
    if args.json:
        Path(args.json).write_text(json.dumps(result.summary(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0
