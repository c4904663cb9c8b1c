"""Command-line options shared by every command that runs a segmentation model (`predict`, `evaluate`).

One definition of the model, decoding and device flags, and one way to turn them into a `Segmenter`
and an optional `SamRefiner`, so the commands cannot drift apart.
"""

from __future__ import annotations

import argparse
from typing import Any

SAM_HELP = (
    "SAM / SAM 2 model: facebook/sam-vit-base|huge, facebook/sam2.1-hiera-*, a folder, or 'tiny' "
    "(a random-weight tiny SAM for offline smoke tests; its masks mean nothing)"
)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Add MODEL, --adapter, decoding (--no-constrained, --no-jump-forward, --sentences), --dtype,
    --device and --trust-remote-code to `parser`."""
    parser.add_argument("model", help="model folder or hub id (a PEFT adapter folder also works)")
    parser.add_argument("--adapter", default=None, help="PEFT adapter folder to load on top of MODEL")
    parser.add_argument(
        "--no-constrained",
        dest="constrained",
        action="store_false",
        help="free decoding (lenient decoding repairs the text)",
    )
    parser.add_argument(
        "--no-jump-forward",
        dest="jump_forward",
        action="store_false",
        help="generate grammar-forced tokens one forward pass at a time",
    )
    parser.add_argument(
        "--sentences",
        choices=("templates", "free", "none"),
        default=None,
        help="answer sentence allowed before <seg> under constraints (default: the model's "
        "text4seg.json, else templates)",
    )
    parser.add_argument(
        "--target-label",
        default=None,
        metavar="WORD",
        help="fixed label the model writes for referred cells (default: the model's text4seg.json, "
        "else the expression)",
    )
    parser.add_argument(
        "--background-bias",
        type=float,
        default=None,
        metavar="B",
        help="subtract B from the logits of background tokens, a recall knob to calibrate on val data "
        "(default: the model's text4seg.json, else 0)",
    )
    parser.add_argument("--dtype", default="auto", help="model dtype: auto, float32, bfloat16, float16")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: cuda if available)")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow model code from the model folder"
    )


def make_refiner(sam: str, device: str | None, min_iou: float = 0.5, iterations: int = 3) -> Any:
    """A `SamRefiner` for a checkpoint id or folder, or the tiny random one for `sam == "tiny"`."""
    from text4seg.infer.refine import SamRefiner, tiny_sam

    if sam == "tiny":
        return SamRefiner(*tiny_sam(), device=device, min_iou=min_iou, iterations=iterations)
    return SamRefiner.from_pretrained(sam, device=device, min_iou=min_iou, iterations=iterations)


def segmenter_from_args(
    args: argparse.Namespace, *, grid: Any, device: str | None, refiner: Any = None
) -> Any:
    """The `Segmenter` the options of `add_model_args` describe (raises OSError when MODEL cannot load)."""
    from text4seg.infer.segmenter import Segmenter

    return Segmenter.from_pretrained(
        args.model,
        adapter=args.adapter,
        refiner=refiner,
        dtype=args.dtype,
        device=device,
        constrained=args.constrained,
        jump_forward=args.jump_forward,
        grid=grid,
        answer_sentences=args.sentences,
        target_label=args.target_label,
        background_bias=args.background_bias,
        trust_remote_code=args.trust_remote_code,
    )
