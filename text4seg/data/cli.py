"""`text4seg build KIND`: annotations -> records on disk, KIND one of coco|refcoco|grefcoco|synthetic|
labelmap|<label-map preset>|llava (conversations, `text4seg.data.conversations_cli`).

One subcommand per row of `text4seg.data.sources.SOURCES`, plus ``synthetic``. Bad input ends in one
``error:`` line naming the file, never a traceback.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from . import conversations_cli, labelmap_cli
from .config import IMAGE_STORES
from .sources import SOURCES, SourceKind

KINDS = tuple(SOURCES)

USER_ERRORS = (ValueError, OSError, pickle.UnpicklingError, RuntimeError, RecursionError, MemoryError)
"""What a build raises for bad input or a failed build (DataError is a ValueError, BuildError a
RuntimeError, UnsafePickleError an UnpicklingError); reported as one ``error:`` line."""


def _grid(value: str) -> int | tuple[int, int]:
    """``16`` or ``24x16`` (rows x cols)."""
    try:
        if "x" in value:
            rows, cols = (int(v) for v in value.lower().split("x"))
            return rows, cols
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must be N or ROWSxCOLS, got {value!r}") from None


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="output folder (a datasets.DatasetDict)")
    parser.add_argument("--grid", type=_grid, default=16, help="descriptor grid, N or ROWSxCOLS (default 16)")
    parser.add_argument(
        "--method", choices=("nearest", "area"), default="nearest", help="mask downsampling (default nearest)"
    )
    parser.add_argument("--num-proc", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed for template and question choices")
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first bad input instead of skipping it"
    )
    add_image_options(parser)
    parser.add_argument(
        "--target-label",
        metavar="WORD",
        help="label referred cells with this fixed word instead of the expression (segment with the same)",
    )
    parser.add_argument("--no-cache", action="store_true", help="rebuild even if --out holds the same build")
    parser.add_argument("--llava", type=Path, help="also export the LLaVA-style JSON list to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_image_options(parser: argparse.ArgumentParser, paths_flag: bool = True) -> None:
    """``--image-store`` (default: each image once in OUT/images), ``--copy-images`` and, where
    ``paths_flag``, the older ``--image-paths``."""
    parser.add_argument(
        "--image-store",
        choices=IMAGE_STORES,
        help="where images go: 'folder' (default) stores each image once in OUT/images and records hold "
        "paths relative to OUT (the folder can move; read it with text4seg.data.load_records); 'embed' "
        "puts the image bytes in every record; 'paths' stores absolute paths to the source files",
    )
    parser.add_argument(
        "--copy-images",
        action="store_true",
        help="with the folder store, copy the images instead of hard-linking them to the sources (use it "
        "when source images may be rewritten in place)",
    )
    if paths_flag:
        parser.add_argument(
            "--image-paths",
            action="store_true",
            help="same as --image-store paths: store absolute image paths instead of the images",
        )


_OPTIONS = {
    "instances": lambda parser: parser.add_argument(
        "--instances", type=Path, help="instances.json (default: next to --ann)"
    ),
    "tasks": lambda parser: parser.add_argument(
        "--tasks", nargs="+", choices=("refer", "instance", "semantic"), help="tasks (default: all)"
    ),
}


def _add_source(kinds: argparse._SubParsersAction, kind: SourceKind) -> None:
    parser = kinds.add_parser(kind.name, help=kind.help, description=kind.help)
    parser.add_argument(
        "--ann", required=True, type=Path, action="append" if kind.many_files else "store", help=kind.ann_help
    )
    parser.add_argument("--images", required=True, type=Path, help="folder holding the images")
    for option in kind.options:
        _OPTIONS[option](parser)
    parser.add_argument("--splits", nargs="+", help="keep only these splits (default: all)")
    parser.add_argument("--name", help=f"dataset name in record ids (default {kind.name}; e.g. refcoco+)")
    _add_common(parser)
    parser.set_defaults(func=run_build)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `build` and its dataset kinds to the `text4seg` command line."""
    build = subparsers.add_parser(
        "build",
        help="build chat training records from COCO / RefCOCO / gRefCOCO annotations",
        description="Turn annotation files into chat-format training records (docs/RECORDS.md), saved "
        "with datasets.save_to_disk, with a build_report.json listing every skipped item.",
    )
    kinds = build.add_subparsers(dest="kind", metavar="KIND", required=True)
    for kind in SOURCES.values():
        _add_source(kinds, kind)
    synth = kinds.add_parser(
        "synthetic",
        help="write a synthetic shapes dataset, then build coco/refcoco/grefcoco records from its files",
        description="Writes OUT/source (images, instances.json, refs(unc).p, grefs(unc).json) and builds "
        "OUT/coco, OUT/refcoco and OUT/grefcoco through the real loaders.",
    )
    synth.add_argument("--num-images", type=int, default=200, help="images to draw (default 200)")
    synth.add_argument(
        "--image-size", type=int, nargs="+", default=[256], help="W [H] in pixels (default 256)"
    )
    synth.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="record sets to build")
    _add_common(synth)
    synth.set_defaults(func=run_synthetic)
    labelmap_cli.register(kinds, _grid)
    conversations_cli.register(kinds)


def _config(args: argparse.Namespace):
    from .build import BuildConfig

    return BuildConfig(
        grid=args.grid,
        method=args.method,
        seed=args.seed,
        num_proc=args.num_proc,
        strict=args.strict,
        image_paths=args.image_paths,
        image_store=args.image_store,
        copy_images=args.copy_images,
        target_label=args.target_label,
        progress=not args.quiet,
    )


def _summary(kind: str, result) -> None:
    report = result.report
    splits = ", ".join(f"{k}: {v}" for k, v in report["records"].items()) or "none"
    print(f"{kind}: {report['records_total']} records ({splits}) -> {result.out_dir} [{report['cache']}]")
    if report["skipped_total"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report["skipped_by_reason"].items()))
        print(f"  skipped {report['skipped_total']} ({reasons}); see {result.out_dir / 'build_report.json'}")


def _message(err: BaseException) -> str:
    """One line for an error: its text, or its kind when it has none (RecursionError, MemoryError)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _export(result, args: argparse.Namespace, image_root: Path, path: Path | None) -> None:
    if path is not None:
        from .build import to_llava_json

        count = to_llava_json(result.dataset, path, image_root)
        print(f"  wrote {count} LLaVA items to {path}")


def run_build(args: argparse.Namespace) -> int:
    from .arrow_files import pyarrow_without_pandas
    from .build import build

    pyarrow_without_pandas()  # this process writes records, and nothing that needs pandas

    try:
        result = build(
            args.kind,
            args.ann,
            args.images,
            args.out,
            _config(args),
            instances=getattr(args, "instances", None),
            splits=args.splits,
            dataset_name=args.name,
            tasks=getattr(args, "tasks", None),
            reuse_cache=not args.no_cache,
        )
    except USER_ERRORS as err:
        print(f"error: {_message(err)}", file=sys.stderr)
        return 1
    _summary(args.kind, result)
    _export(result, args, args.images, args.llava)
    return 0


def run_synthetic(args: argparse.Namespace) -> int:
    from .arrow_files import pyarrow_without_pandas
    from .build import build

    pyarrow_without_pandas()  # as in run_build
    from .synthetic import make_synthetic

    size = args.image_size[0] if len(args.image_size) == 1 else (args.image_size[0], args.image_size[1])
    try:
        paths = make_synthetic(
            args.out / "source",
            num_images=args.num_images,
            image_size=size,
            seed=args.seed,
            reuse=not args.no_cache,
        )
    except USER_ERRORS as err:
        print(f"error: {_message(err)}", file=sys.stderr)
        return 1
    print(
        f"synthetic: {paths.num_images} images, {paths.num_annotations} annotations, {paths.num_refs} refs, "
        f"{paths.num_grefs} grefs -> {paths.root}"
    )
    anns = {"coco": list(paths.instances_by_split.values()), "refcoco": paths.refs, "grefcoco": paths.grefs}
    for kind in args.kinds:
        try:
            result = build(
                kind, anns[kind], paths.images, args.out / kind, _config(args), reuse_cache=not args.no_cache
            )
        except USER_ERRORS as err:
            print(f"error: {_message(err)}", file=sys.stderr)
            return 1
        _summary(kind, result)
        if args.llava is not None:
            _export(
                result,
                args,
                paths.images,
                args.llava.with_name(f"{args.llava.stem}_{kind}{args.llava.suffix}"),
            )
    return 0
