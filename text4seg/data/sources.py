"""The annotation sources a build can read, behind one table: `SOURCES` maps a kind name (``coco``,
``refcoco``, ``grefcoco``) to a `SourceKind`, which says which files a request reads and how to load
them into `Source`s (images, annotations, record specs). A new format is one loader and one row.

`text4seg build synthetic` is not a row: it writes files in these three formats and builds them
through these same loaders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .annotations import Source
from .workers import forks


@dataclass(frozen=True)
class SourceRequest:
    """What a build was asked to read: annotation file(s), image folder and loader options."""

    ann_files: list[Path]
    image_root: Path
    instances: Path | None = None
    splits: Sequence[str] | None = None
    dataset_name: str | None = None
    tasks: Sequence[str] | None = None
    seed: int = 0
    strict: bool = False


@dataclass(frozen=True)
class SourceKind:
    """One kind of annotation source: its help texts, whether ``--ann`` repeats, the extra options it
    takes (``instances``, ``tasks``), the files a request reads and the loader."""

    name: str
    help: str
    ann_help: str
    many_files: bool
    options: tuple[str, ...]
    input_files: Callable[[SourceRequest], list[Path]]
    load: Callable[[SourceRequest, list[Path]], list[Source]]


def _coco_files(request: SourceRequest) -> list[Path]:
    from .coco import split_from_filename

    files = [p for p in request.ann_files if not request.splits or split_from_filename(p) in request.splits]
    if not files:
        raise ValueError(
            f"no annotation file is named instances_<split>.json for splits {list(request.splits or [])}"
        )
    return files


def _load_coco(request: SourceRequest, files: list[Path]) -> list[Source]:
    from .coco import TASKS, load_coco

    name = request.dataset_name or "coco"
    tasks = request.tasks or TASKS
    return [
        load_coco(p, request.image_root, tasks=tasks, seed=request.seed, dataset=name, strict=request.strict)
        for p in files
    ]


def _refer_files(kind: str) -> Callable[[SourceRequest], list[Path]]:
    def input_files(request: SourceRequest) -> list[Path]:
        if len(request.ann_files) != 1:
            raise ValueError(f"{kind} takes one annotation file, got {len(request.ann_files)}")
        ann = request.ann_files[0]
        return [ann, request.instances or ann.parent / "instances.json"]

    return input_files


def _refer_loader(kind: str) -> Callable[[SourceRequest, list[Path]], list[Source]]:
    def load(request: SourceRequest, files: list[Path]) -> list[Source]:
        from . import refer

        loader = {"refcoco": refer.load_refcoco, "grefcoco": refer.load_grefcoco}[kind]
        source = loader(
            files[0],
            request.image_root,
            instances_file=files[1],
            dataset=request.dataset_name or kind,
            splits=request.splits,
            strict=request.strict,
            # each image's checks and specs made in the workers that make its records; spawned workers
            # would be sent every annotation and ref with each chunk, so there they are made here
            deferred=forks(),
        )
        return [source]

    return load


SOURCES: dict[str, SourceKind] = {
    "coco": SourceKind(
        "coco",
        "COCO instances json(s): category, instance and semantic records",
        "instances_*.json (repeatable)",
        True,
        ("tasks",),
        _coco_files,
        _load_coco,
    ),
    "refcoco": SourceKind(
        "refcoco",
        "RefCOCO/+/g refs pickle + instances.json: one record per sentence",
        "refs(unc).p",
        False,
        ("instances",),
        _refer_files("refcoco"),
        _refer_loader("refcoco"),
    ),
    "grefcoco": SourceKind(
        "grefcoco",
        "gRefCOCO grefs json + instances.json: multi-target and no-target expressions",
        "grefs(unc).json",
        False,
        ("instances",),
        _refer_files("grefcoco"),
        _refer_loader("grefcoco"),
    ),
}
"""Kind name -> `SourceKind`; `text4seg.data.build.build` and the `build` command read only this."""


def source_kind(name: str) -> SourceKind:
    """The `SourceKind` called ``name``; ValueError listing the known kinds otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown dataset kind {name!r}; expected one of {', '.join(SOURCES)}") from None
