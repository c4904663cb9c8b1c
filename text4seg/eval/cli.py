"""`text4seg evaluate MODEL --data DIR --split val [--task semantic] [--refine sam --sam ID]`: score a model on a
built dataset."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from text4seg.infer.model_args import (
    ArgsError,
    add_model_args,
    add_refine_args,
    check_output_folder,
    grid_side,
    load_segmenter,
    non_negative_int,
    one_line,
    positive_int,
    preflight,
    refiner_from_args,
    sam_model,
)

PROG = "text4seg evaluate"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` sub-command."""
    p = subparsers.add_parser(
        "evaluate",
        help="score a model on a dataset made by `text4seg build` (cIoU, gIoU, prec@, N/T-acc, REC, mIoU)",
        description=(
            "Run a text4seg model over one split of a dataset made by `text4seg build` and write a JSON report "
            "(coarse = bilinear, guided = image-guided upsampling and, with --refine sam, SAM-refined metrics "
            "side by side, all from one generated grid; --task semantic: open-vocabulary mIoU with a per-class "
            "table), per-sample JSON lines and "
            "optional overlay PNGs. Under `accelerate launch` the samples are shared among the processes and "
            "the metrics merged exactly, so the numbers equal a single process's."
        ),
    )
    add_model_args(p)
    p.add_argument("--data", required=True, help="dataset directory written by `text4seg build`")
    p.add_argument("--split", default="val", help="split to evaluate (val)")
    add_refine_args(p)
    p.add_argument(
        "--limit", type=positive_int, default=None, metavar="N", help="evaluate the first N records only"
    )
    p.add_argument("--out", default=None, help="output folder for report.json, samples.jsonl and overlays/")
    p.add_argument(
        "--overlays",
        type=non_negative_int,
        default=0,
        metavar="K",
        help="write overlay PNGs for the first K samples",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="samples per generate call (8)")
    p.add_argument(
        "--grid",
        type=grid_side,
        default=None,
        help="descriptor grid the model answers in (default: the model's text4seg.json, else the dataset's "
        "`grid` column; the ground truth is scored at full resolution either way)",
    )
    p.add_argument(
        "--task",
        choices=("all", "refer", "semantic"),
        default="all",
        help="records to score: all (each asked its own query), refer (expression records), semantic "
        "(semantic records, each asked for the whole class list: open-vocabulary mIoU)",
    )
    p.add_argument(
        "--classes",
        default=None,
        metavar="FILE",
        help="with --task semantic: the class names to ask for, one a line (default: every class of the "
        "split's semantic records, background first then sorted)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _device(requested: str | None) -> str:
    from text4seg.distributed import process_state

    if requested:
        return requested
    state = process_state()
    if state is not None:
        return str(state.device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(args: argparse.Namespace) -> int:
    from text4seg.distributed import processes_session

    with processes_session():
        return _run(args)


def _load_data(args: argparse.Namespace) -> Any:
    """The split to score, checked to be non-empty (FileNotFoundError, KeyError, ArgsError)."""
    from text4seg.eval.evaluate import load_split

    data = load_split(args.data, args.split)
    if len(data) == 0:
        raise ArgsError(f"split {args.split!r} of {args.data} is empty")
    return data


def _asked_classes(args: argparse.Namespace, data: Any) -> list[str] | None:
    """For --task semantic: the class list asked, worded by --question-style (ArgsError for --classes
    without --task semantic, or a split with no semantic record)."""
    from text4seg.eval.evaluate import read_class_file, semantic_classes

    if args.task != "semantic":
        if args.classes is not None:
            raise ArgsError("--classes goes with --task semantic")
        return None
    found = semantic_classes(data)
    if not found:
        raise ArgsError(f"split {args.split!r} of {args.data} has no semantic records (--task semantic)")
    classes = read_class_file(args.classes) if args.classes is not None else found[1:]
    return [c for c in classes if c != found[0]]


def _data_grid(data: Any) -> tuple[int, int] | None:
    """The grid of the split's first record (the `grid` column), or None when it has none."""
    grid = data[0].get("grid") if "grid" in data.column_names else None
    return tuple(grid) if grid else None


def _run(args: argparse.Namespace) -> int:
    from text4seg.distributed import process_state
    from text4seg.eval.evaluate import EvalDataError, evaluate

    try:
        check_output_folder(args.out, "--out")
        saved = preflight(args)
        data = _load_data(args)
        classes = _asked_classes(args, data)
        grid = args.grid if args.grid is not None or "grid" in saved else _data_grid(data)
        device = _device(args.device)
        refiner = refiner_from_args(args, device)
        segmenter = load_segmenter(args, grid=grid, device=device, prog=PROG)
    except (ArgsError, OSError, KeyError, ValueError) as err:
        print(f"{PROG}: {one_line(err)}", file=sys.stderr)
        return 2
    info = {
        "model": args.model,
        "adapter": args.adapter,
        "data": str(Path(args.data)),
        "grid": list(segmenter.fmt.grid),
        "constrained": args.constrained,
        "refine": args.refine,
        "sam": sam_model(args),
        "question_style": segmenter.question_style,
        "visible": args.visible,
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
            task=args.task,
            classes=classes,
        )
    except EvalDataError as err:
        print(f"{PROG}: {one_line(err)}", file=sys.stderr)
        return 2
    state = process_state()
    if state is None or state.is_main_process:
        print(report.summary())
        if args.out:
            print(f"wrote {Path(args.out) / 'report.json'} and samples.jsonl")
    return 0
