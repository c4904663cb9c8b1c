"""`text4seg build llava --json FILE --images DIR --out DIR`: conversation records (LLaVA or ms-swift JSON)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .conversations import FORMATS, IMAGE_STORES, ConversationSet, build_conversations
from .storage import report_summary


def register(kinds: argparse._SubParsersAction) -> None:
    """Add `llava` under `text4seg build`."""
    parser = kinds.add_parser(
        "llava",
        help="conversation records from LLaVA-format or ms-swift query/response JSON",
        description="Each item becomes a record with task 'conversation' (no masks; trained on every "
        "assistant turn, never evaluated). Bad items are skipped and listed in build_report.json.",
    )
    parser.add_argument("--json", required=True, type=Path, action="append", help="JSON list (repeatable)")
    parser.add_argument("--images", required=True, type=Path, help="folder the image paths are relative to")
    parser.add_argument("--out", required=True, type=Path, help="output folder (a datasets.DatasetDict)")
    parser.add_argument(
        "--format", choices=FORMATS, help="llava (conversations) or swift (query/response); default: detected"
    )
    parser.add_argument(
        "--image-store",
        choices=IMAGE_STORES,
        default="folder",
        help="'folder' (default) stores each image once in OUT/images and records hold paths relative to "
        "OUT (the folder can move; read it with text4seg.data.load_records); 'embed' puts the image bytes "
        "in every record; 'paths' stores absolute paths to the source files",
    )
    parser.add_argument(
        "--copy-images",
        action="store_true",
        help="with the folder store, copy the images instead of hard-linking them to the sources",
    )
    parser.add_argument("--split", default="train", help="split name (train)")
    parser.add_argument("--name", default="llava", help="dataset name in record ids and source (llava)")
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first bad item instead of skipping"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if not args.images.is_dir():
            raise ValueError(f"{args.images}: not a folder")
        sets = [ConversationSet(path, args.images, args.format, args.name, args.split) for path in args.json]
        report = build_conversations(
            sets,
            args.out,
            strict=args.strict,
            progress=not args.quiet,
            image_store=args.image_store,
            copy_images=args.copy_images,
        )
    except (ValueError, OSError, RecursionError, MemoryError) as err:
        print(f"error: {' '.join(str(err).split()) or type(err).__name__}", file=sys.stderr)
        return 1
    print(report_summary(report, "conversation records", args.out))
    return 0
