"""`text4seg evaluate MODEL --data DIR --split val [--refine sam --sam ID]`: score a model on a built dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a model on a dataset made by `text4seg build` (cIoU, gIoU, prec@, N/T-acc, REC, mIoU)",
        description=(
            "Run a text4seg model over one split of a dataset made by `text4seg build` and write a JSON report "
            "(coarse and, with --refine sam, SAM-refined metrics side by side), per-sample JSON lines and "
            "optional overlay PNGs. Under `accelerate launch` the samples are shared among the processes and "
            "the metrics merged exactly, so the numbers equal a single process's."
        ),
    )
    p.add_argument("model", help="model folder or hub id (a PEFT adapter folder also works)")
    p.add_argument("--data", required=True, help="dataset directory written by `text4seg build`")
    p.add_argument("--split", default="val", help="split to evaluate (val)")
    p.add_argument("--adapter", default=None, help="PEFT adapter folder to load on top of MODEL")
    p.add_argument("--refine", choices=("none", "sam"), default="none", help="also score SAM-refined masks")
    p.add_argument(
        "--sam",
        default="facebook/sam-vit-base",
        help="SAM / SAM 2 model for --refine sam: facebook/sam-vit-base|huge, facebook/sam2.1-hiera-*, a folder, "
        "or 'tiny' (a random-weight tiny SAM for smoke tests; its masks mean nothing)",
    )
    p.add_argument(
        "--min-iou", type=float, default=0.5, help="keep the coarse mask when SAM's IoU with it is lower"
    )
    p.add_argument("--sam-iterations", type=int, default=3, help="SAM prompt rounds per mask (3)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N records only")
    p.add_argument("--out", default=None, help="output folder for report.json, samples.jsonl and overlays/")
    p.add_argument(
        "--overlays", type=int, default=0, metavar="K", help="write overlay PNGs for the first K samples"
    )
    p.add_argument("--batch-size", type=int, default=8, help="samples per generate call (8)")
    p.add_argument(
        "--grid", type=int, default=None, help="descriptor grid (default: the dataset's `grid` column)"
    )
    p.add_argument("--no-constrained", dest="constrained", action="store_false", help="free decoding")
    p.add_argument("--no-jump-forward", dest="jump_forward", action="store_false", help="no jump-forward")
    p.add_argument(
        "--sentences",
        choices=("templates", "free", "none"),
        default="templates",
        help="answer sentence allowed before <seg> under constraints (templates)",
    )
    p.add_argument("--dtype", default="auto", help="model dtype: auto, float32, bfloat16, float16")
    p.add_argument("--device", default=None, help="cpu, cuda … (default: this process's accelerate device)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from the model folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _device(requested: str | None) -> str:
    from text4seg.eval.evaluate import process_state

    if requested:
        return requested
    state = process_state()
    if state is not None:
        return str(state.device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def make_refiner(sam: str, device: str, min_iou: float, iterations: int):
    """A `SamRefiner` for a checkpoint id or folder, or the tiny random one for `sam == "tiny"`."""
    from text4seg.infer.refine import SamRefiner, tiny_sam

    if sam == "tiny":
        return SamRefiner(*tiny_sam(), device=device, min_iou=min_iou, iterations=iterations)
    return SamRefiner.from_pretrained(sam, device=device, min_iou=min_iou, iterations=iterations)


def run(args: argparse.Namespace) -> int:
    from text4seg.eval.evaluate import EvalDataError, evaluate, load_split, process_state
    from text4seg.infer.segmenter import Segmenter

    try:
        data = load_split(args.data, args.split)
    except (FileNotFoundError, KeyError) as err:
        print(f"text4seg evaluate: {err}", file=sys.stderr)
        return 2
    if len(data) == 0:
        print(f"text4seg evaluate: split {args.split!r} of {args.data} is empty", file=sys.stderr)
        return 2
    grid = args.grid if args.grid is not None else tuple(data[0]["grid"])
    device = _device(args.device)
    refiner = (
        make_refiner(args.sam, device, args.min_iou, args.sam_iterations) if args.refine == "sam" else None
    )
    try:
        segmenter = Segmenter.from_pretrained(
            args.model,
            adapter=args.adapter,
            dtype=args.dtype,
            device=device,
            constrained=args.constrained,
            jump_forward=args.jump_forward,
            grid=grid,
            answer_sentences=args.sentences,
            trust_remote_code=args.trust_remote_code,
        )
    except OSError as err:
        print(f"text4seg evaluate: cannot load model {args.model}: {err}", file=sys.stderr)
        return 2
    info = {
        "model": args.model,
        "adapter": args.adapter,
        "data": str(Path(args.data)),
        "grid": list(grid) if isinstance(grid, tuple) else grid,
        "constrained": args.constrained,
        "sam": args.sam if refiner is not None else None,
    }
    try:
        report = evaluate(
            segmenter,
            data,
            refiner=refiner,
            split=args.split,
            limit=args.limit,
            batch_size=args.batch_size,
            overlays=args.overlays,
            out_dir=args.out,
            progress=not args.quiet,
            info=info,
        )
    except EvalDataError as err:
        print(f"text4seg evaluate: {err}", file=sys.stderr)
        return 2
    state = process_state()
    if state is None or state.is_main_process:
        print(report.summary())
        if args.out:
            print(f"wrote {Path(args.out) / 'report.json'} and samples.jsonl")
    return 0
