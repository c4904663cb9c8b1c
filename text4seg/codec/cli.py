"""`text4seg encode` and `text4seg decode`: the codec from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .descriptor import decode, encode_label_map, encode_mask
from .format import TEXT4SEG
from .rrle import DescriptorParseError


def _read_image_array(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image)
    except (OSError, ValueError) as err:
        raise SystemExit(f"text4seg: cannot read mask image {path}: {err}") from None


def _run_encode(args: argparse.Namespace) -> int:
    fmt = TEXT4SEG.with_grid(args.grid)
    array = _read_image_array(args.mask)
    if array.ndim == 3:
        array = array[..., 0]
    if len(args.labels) == 1:
        text = encode_mask(array != 0, args.labels[0], fmt=fmt, method=args.method)
    else:
        text = encode_label_map(array, [fmt.background, *args.labels], fmt=fmt, method=args.method)
    sys.stdout.write(text)
    return 0


def _run_decode(args: argparse.Namespace) -> int:
    fmt = TEXT4SEG.with_grid(args.grid)
    text = sys.stdin.read() if args.text == "-" else Path(args.text).read_text(encoding="utf-8")
    try:
        descriptor = decode(text, fmt=fmt, strict=args.strict)
    except DescriptorParseError as err:
        print(f"text4seg: {args.text}: {err}", file=sys.stderr)
        return 1
    print("labels:", ", ".join(f"{i}={name}" for i, name in enumerate(descriptor.labels)))
    for row in descriptor.grid:
        print(" ".join(f"{v:d}" for v in row))
    for repair in descriptor.report:
        print(f"repaired: {repair}", file=sys.stderr)
    if args.out:
        from PIL import Image

        height, width = (int(v) for v in args.size.lower().split("x"))
        mask = descriptor.to_mask((height, width))
        out = (mask.astype(np.uint8) * 255) if mask.dtype == bool else mask.astype(np.uint8)
        Image.fromarray(out).save(args.out)
        print(f"wrote {args.out}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `encode` and `decode` to the `text4seg` command."""
    enc = subparsers.add_parser("encode", help="mask image -> descriptor text")
    enc.add_argument("mask", help="mask PNG: non-zero = foreground, or a label map with values 1..K")
    enc.add_argument(
        "labels", nargs="+", help="one label for a binary mask, or K class names for values 1..K"
    )
    enc.add_argument("--grid", type=int, default=16, help="grid size (default 16)")
    enc.add_argument("--method", choices=["nearest", "area"], default="nearest", help="downsampling method")
    enc.set_defaults(func=_run_encode)

    dec = subparsers.add_parser("decode", help="descriptor text or model answer -> grid (and mask PNG)")
    dec.add_argument("text", help="file holding the text, or - for standard input")
    dec.add_argument("--grid", type=int, default=16, help="grid size (default 16)")
    dec.add_argument("--strict", action="store_true", help="fail on malformed text instead of repairing it")
    dec.add_argument("--out", help="write the mask at --size as a PNG")
    dec.add_argument("--size", default="256x256", help="HEIGHTxWIDTH of --out (default 256x256)")
    dec.set_defaults(func=_run_decode)
