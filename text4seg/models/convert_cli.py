"""`text4seg convert llava-original SRC --out DST`: an original-layout LLaVA-1.5 checkpoint (Text4Seg's
released models) as a llava-hf folder with a text4seg.json preset (`text4seg.models.convert`)."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `convert` and its formats to the `text4seg` command line."""
    parser = subparsers.add_parser("convert", help="convert a checkpoint into a layout text4seg loads")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    llava = formats.add_parser(
        "llava-original",
        help="original LLaVA-1.5 (LlavaLlamaForCausalLM, model.mm_projector) -> llava-hf",
    )
    llava.add_argument("src", help="folder of the original checkpoint (config.json, weights, tokenizer)")
    llava.add_argument("--out", required=True, help="folder to write the llava-hf model to")
    llava.add_argument(
        "--vision-tower",
        default=None,
        help="CLIP tower folder or hub id (default: config.json's mm_vision_tower)",
    )
    llava.add_argument(
        "--preset",
        choices=["text4seg", "text4seg-p24"],
        default="text4seg",
        help="text4seg.json written beside the model: 16x16 grid (text4seg) or 24x24 (text4seg-p24)",
    )
    llava.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default="float16")
    llava.set_defaults(func=_run_llava)


def _run_llava(args: argparse.Namespace) -> int:
    from text4seg.models.convert import ConversionError, convert_llava_original

    try:
        out = convert_llava_original(
            args.src, args.out, vision_tower=args.vision_tower, preset=args.preset, dtype=args.dtype
        )
    except (ConversionError, OSError) as err:
        print(f"text4seg convert: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} (llava-hf, preset {args.preset})")
    return 0
