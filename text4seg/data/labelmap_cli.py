"""`text4seg build labelmap ...` and the presets `text4seg build cocostuff|ade20k|pascal-context|voc --root DIR`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .config import DEFAULT_IMAGE_STORE
from .labelmap import (
    PRESETS,
    QUESTION_STYLES,
    LabelMapOptions,
    LabelMapSet,
    build_labelmaps,
    preset,
    read_classes,
)
from .storage import report_summary


def _add_options(parser: argparse.ArgumentParser, grid_type) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (a datasets.DatasetDict)")
    parser.add_argument(
        "--grid", type=grid_type, default=32, help="descriptor grid, N or ROWSxCOLS (default 32)"
    )
    parser.add_argument(
        "--crop", type=float, help="random crops, sides at least this fraction (off by default)"
    )
    parser.add_argument("--distractors", type=int, default=0, help="absent classes to name per question (0)")
    parser.add_argument(
        "--synonyms", type=Path, help='JSON file {"class": ["synonym", ...]} (off by default)'
    )
    parser.add_argument("--max-classes", type=int, help="at most this many classes per question (no cap)")
    parser.add_argument(
        "--question-style",
        choices=QUESTION_STYLES,
        default="list",
        help="list: our templates; pipe: class names joined by ' | ' as Text4Seg asks",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (0)")
    from .cli import add_image_options  # here: text4seg.data.cli imports this module

    add_image_options(parser, paths_flag=False)
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first bad pair instead of skipping it"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def register(kinds: argparse._SubParsersAction, grid_type) -> None:
    """Add `labelmap` and one preset per entry of `PRESETS` under `text4seg build`."""
    generic = kinds.add_parser(
        "labelmap",
        help="semantic records from images + PNG label maps + a class list",
        description="Line k of --classes names pixel value k (an empty line: an unused value). Values in "
        "--ignore become background in the descriptor and are left out of scoring.",
    )
    generic.add_argument("--images", required=True, type=Path, help="folder of images (name.jpg, ...)")
    generic.add_argument("--labels", required=True, type=Path, help="folder of label PNGs (name.png)")
    generic.add_argument("--classes", required=True, type=Path, help="class file, one name per pixel value")
    generic.add_argument("--ignore", type=int, nargs="+", default=[255], help="ignored values (255)")
    generic.add_argument("--split", default="train", help="split name (train)")
    generic.add_argument("--name", default="labelmap", help="dataset name in record ids (labelmap)")
    _add_options(generic, grid_type)
    generic.set_defaults(func=run_labelmap)
    for name in PRESETS:
        p = kinds.add_parser(
            name,
            help=f"semantic records from {name} in its release layout",
            description=f"See text4seg.data.labelmap.PRESETS for the {name} layout.",
        )
        p.add_argument("--root", required=True, type=Path, help="the dataset's root folder")
        p.add_argument("--splits", nargs="+", default=["train", "val"], choices=("train", "val"))
        _add_options(p, grid_type)
        p.set_defaults(func=run_preset, preset=name)


def _options(args: argparse.Namespace) -> LabelMapOptions:
    synonyms = {}
    if args.synonyms is not None:
        raw = json.loads(args.synonyms.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
            raise ValueError(f'{args.synonyms}: expected {{"class": ["synonym", ...]}}')
        synonyms = {str(k): tuple(str(s) for s in v) for k, v in raw.items()}
    return LabelMapOptions(
        grid=args.grid,
        crop=args.crop,
        distractors=args.distractors,
        synonyms=synonyms,
        max_classes=args.max_classes,
        question_style=args.question_style,
        seed=args.seed,
    )


def _run(sets_of, args: argparse.Namespace) -> int:
    try:
        sets = sets_of(args)
        for data in sets:
            for folder in (data.images, data.labels):
                if not folder.is_dir():
                    raise ValueError(f"{folder}: not a folder")
        report = build_labelmaps(
            sets,
            _options(args),
            args.out,
            strict=args.strict,
            progress=not args.quiet,
            image_store=args.image_store or DEFAULT_IMAGE_STORE,
            copy_images=args.copy_images,
        )
    except (ValueError, OSError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(report_summary(report, "semantic records", args.out))
    return 0


def run_labelmap(args: argparse.Namespace) -> int:
    return _run(
        lambda a: [
            LabelMapSet(a.name, a.split, a.images, a.labels, read_classes(a.classes), tuple(a.ignore))
        ],
        args,
    )


def run_preset(args: argparse.Namespace) -> int:
    return _run(lambda a: [preset(a.preset, a.root, split) for split in a.splits], args)
