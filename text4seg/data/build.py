"""Record specs -> chat training records (docs/RECORDS.md), saved as a `datasets.DatasetDict`.

Work is split by image: each annotation an image needs is decoded once (pycocotools, checked by
`text4seg.data.masks`) and shared by every record of that image, e.g. all sentences of a ref. Images
go to ``num_proc`` worker processes; results come back in image order, so the output does not depend
on ``num_proc``. Template choices draw from ``rng([seed, crc32(record id)])`` for the same reason.

Bad input is skipped, counted and listed in ``build_report.json`` (id, reason, detail, file); with
``strict`` the first problem raises `DataError`. A fingerprint of the input files and parameters
is stored in that report; `build` returns the saved dataset unchanged when it matches.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from text4seg.codec import (
    TEXT4SEG,
    DescriptorFormat,
    check_labels,
    format_answer,
    grid_to_text,
    label_map_to_grid,
    mask_to_grid,
)
from text4seg.codec.grid import DOWN_METHODS, mask_to_box
from text4seg.protocol import templates
from text4seg.protocol.records import encode_counts, record_features

from .masks import BadAnnotation, decode_segmentation
from .spec import ImageInfo, Issue, IssueLog, RecordSpec, Source

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

RECORDS_VERSION = 1
"""Bumped whenever the records written for the same inputs change (invalidates caches)."""

REPORT_NAME = "build_report.json"


@dataclass(frozen=True)
class BuildConfig:
    """How records are made. ``grid`` and ``method`` set the descriptor.

    By default ``images`` holds `datasets.Image` values, which ``save_to_disk`` embeds: the saved
    records are self-contained, but every record carries its image's bytes (an image with seven
    sentences is stored seven times). ``image_paths=True`` stores absolute path strings instead.

    ``target_label`` names the referred cells of ``refer`` records: ``None`` (default) writes the
    expression itself, as Text4Seg's data does; a fixed word (e.g. ``"target"``) keeps every answer
    short and spelled the same whatever the expression (the segmenter must then be given the same
    ``target_label``).
    """

    grid: int | tuple[int, int] = 16
    method: str = "nearest"
    seed: int = 0
    num_proc: int = 1
    strict: bool = False
    image_paths: bool = False
    progress: bool = True
    target_label: str | None = None

    def __post_init__(self) -> None:
        if self.method not in DOWN_METHODS:
            raise ValueError(f"unknown downsampling method {self.method!r}; use one of {DOWN_METHODS}")
        if self.num_proc < 1:
            raise ValueError(f"num_proc must be >= 1, got {self.num_proc}")
        self.fmt  # noqa: B018  (validates the grid size now rather than in a worker)
        if self.target_label is not None:
            check_labels([self.fmt.background, self.target_label], self.fmt)

    @property
    def fmt(self) -> DescriptorFormat:
        return TEXT4SEG.with_grid(self.grid)

    def cache_key(self) -> dict[str, Any]:
        """The parameters that change the records (not ``num_proc``, ``strict`` or ``progress``)."""
        rows, cols = self.fmt.grid
        return {
            "grid": [rows, cols],
            "method": self.method,
            "seed": self.seed,
            "image_paths": self.image_paths,
            "target_label": self.target_label,
        }


@dataclass
class BuildResult:
    """The built (or reused) dataset, where it is, and the build report."""

    dataset: DatasetDict
    out_dir: Path
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _Job:
    image: ImageInfo
    path: str
    annotations: dict[int, dict]
    specs: list[RecordSpec]
    ann_file: str
    fmt: DescriptorFormat
    method: str
    seed: int
    strict: bool
    image_paths: bool
    target_label: str | None = None


def _jobs(source: Source, config: BuildConfig) -> list[_Job]:
    by_image: dict[int, list[RecordSpec]] = {}
    for spec in source.specs:
        by_image.setdefault(spec.image_id, []).append(spec)
    jobs = []
    for image_id in sorted(by_image):
        specs = by_image[image_id]
        needed = {a for spec in specs for a in spec.ann_ids}
        image = source.images[image_id]
        jobs.append(
            _Job(
                image=image,
                path=str((source.image_root / image.file_name).resolve()),
                annotations={a: source.annotations[a] for a in sorted(needed)},
                specs=specs,
                ann_file=str(source.ann_file),
                fmt=config.fmt,
                method=config.method,
                seed=config.seed,
                strict=config.strict,
                image_paths=config.image_paths,
                target_label=config.target_label,
            )
        )
    return jobs


def _check_image(job: _Job) -> tuple[str, str] | None:
    """(reason, detail) when the image file is missing, unreadable or of another size."""
    if not os.path.isfile(job.path):
        return "missing_image_file", f"{job.path} does not exist"
    try:
        with Image.open(job.path) as image:
            size = image.size
    except Exception as err:  # PIL raises many types for broken files
        return "unreadable_image", f"{job.path}: {err}"
    if size != (job.image.width, job.image.height):
        return (
            "image_size_mismatch",
            f"{job.path} is {size[0]}x{size[1]}, annotations say {job.image.width}x{job.image.height}",
        )
    return None


@dataclass(frozen=True)
class _Geometry:
    """What a record's targets look like: shared by every sentence with the same annotations."""

    grid: np.ndarray
    masks: list[str]
    box: list[float]
    present: tuple[bool, ...]


def _geometry(job: _Job, target_anns: tuple[tuple[int, ...], ...], masks: dict[int, np.ndarray]) -> _Geometry:
    height, width = job.image.height, job.image.width
    unions = []
    for anns in target_anns:
        union = np.zeros((height, width), dtype=bool, order="F")
        for ann_id in anns:
            union |= masks[ann_id]
        unions.append(union)
    if len(unions) == 1:
        label_masks = unions
        grid = mask_to_grid(unions[0], job.fmt.grid, job.method).astype(np.int32)
    else:
        label_map = np.zeros((height, width), dtype=np.int32, order="F")
        for k in sorted(range(len(unions)), key=lambda k: -int(unions[k].sum())):
            label_map[unions[k]] = k + 1
        label_masks = [label_map == k + 1 for k in range(len(unions))]
        grid = label_map_to_grid(label_map, job.fmt.grid, job.method)
    foreground = (
        np.logical_or.reduce(label_masks) if label_masks else np.zeros((height, width), bool, order="F")
    )
    box = mask_to_box(foreground)
    return _Geometry(
        grid=grid,
        masks=[encode_counts(m) for m in label_masks],
        box=[float(v) for v in box] if box is not None else [],
        present=tuple(bool(m.any()) for m in label_masks),
    )


def _targets(job: _Job, spec: RecordSpec) -> tuple[str, ...]:
    """The labels of grid values 1, 2, …: the spec's, or the build's fixed referring label."""
    if job.target_label is not None and spec.task == "refer":
        return (job.target_label,)
    return spec.targets


def _record(job: _Job, spec: RecordSpec, geometry: _Geometry, stats: Counter) -> dict:
    height, width = job.image.height, job.image.width
    fmt = job.fmt
    labels = [fmt.background, *_targets(job, spec)]
    text = grid_to_text(geometry.grid, labels, fmt)
    present = geometry.present
    if any(present) and not geometry.grid.any():
        stats["target_lost_in_grid"] += 1
    if not any(present):
        stats["no_target"] += 1
    rng = np.random.default_rng([job.seed, zlib.crc32(spec.id.encode("utf-8"))])
    turn = templates.render(rng, spec.task, spec.variant, spec.expression, spec.targets, present)
    return {
        "id": spec.id,
        "images": [job.path if job.image_paths else {"path": job.path, "bytes": None}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "text": None}, {"type": "text", "text": turn.question}],
            },
            {
                "role": "assistant",
                "content": [{"type": "text", "text": format_answer(turn.answer, text, fmt)}],
            },
        ],
        "task": spec.task,
        "expression": spec.expression,
        "labels": labels,
        "grid": [fmt.rows, fmt.cols],
        "width": width,
        "height": height,
        "masks": list(geometry.masks),
        "box": list(geometry.box),
        "source": {
            "dataset": spec.dataset,
            "split": spec.split,
            "image_id": spec.image_id,
            "ann_ids": spec.ann_ids,
            "ref_id": spec.ref_id,
            "sent_id": spec.sent_id,
            "file_name": job.image.file_name,
        },
    }


def build_image(job: _Job) -> tuple[list[dict], list[Issue], Counter]:
    """All records of one image: decode its annotations once, then write each spec's record."""
    log = IssueLog(job.strict)
    stats: Counter = Counter()
    problem = _check_image(job)
    if problem is not None:
        for spec in job.specs:
            log.add(spec.id, problem[0], problem[1], job.ann_file)
        return [], log.items, stats
    masks: dict[int, np.ndarray] = {}
    failures: dict[int, BadAnnotation] = {}
    for ann_id, ann in job.annotations.items():
        dropped: list[str] = []
        try:
            masks[ann_id] = decode_segmentation(
                ann["segmentation"], job.image.height, job.image.width, dropped
            )
        except BadAnnotation as err:
            failures[ann_id] = err
        stats["polygon_parts_dropped"] += len(dropped)
    stats["annotations_decoded"] += len(masks)
    records = []
    shapes: dict[tuple[tuple[int, ...], ...], _Geometry] = {}
    for spec in job.specs:
        bad = [a for a in spec.ann_ids if a in failures]
        if bad:
            err = failures[bad[0]]
            log.add(spec.id, err.reason, f"annotation {bad[0]}: {err.detail}", job.ann_file)
            continue
        try:
            check_labels([job.fmt.background, *_targets(job, spec)], job.fmt)
        except ValueError as err:
            log.add(spec.id, "bad_label", str(err), job.ann_file)
            continue
        if spec.target_anns not in shapes:
            shapes[spec.target_anns] = _geometry(job, spec.target_anns, masks)
        records.append(_record(job, spec, shapes[spec.target_anns], stats))
    return records, log.items, stats


def iter_image_results(
    source: Source, config: BuildConfig = BuildConfig()
) -> Iterator[tuple[list[dict], list[Issue], Counter]]:
    """(records, issues, counters) for each image of ``source``, in image order, with a progress bar;
    images are spread over ``config.num_proc`` processes."""
    jobs = _jobs(source, config)

    def results() -> Iterator[tuple[list[dict], list[Issue], Counter]]:
        if config.num_proc <= 1 or len(jobs) < 2:
            yield from map(build_image, jobs)
            return
        # fork where the platform has it: spawn re-imports the caller's __main__, which fails for
        # stdin, notebooks and unguarded scripts and leaves the pool restarting dead workers forever
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        chunksize = max(1, min(32, len(jobs) // (config.num_proc * 8)))
        with context.Pool(config.num_proc) as pool:
            yield from pool.imap(build_image, jobs, chunksize=chunksize)

    yield from tqdm(
        results(), total=len(jobs), desc=f"{source.dataset}: images", unit="img", disable=not config.progress
    )


def build_records(
    source: Source, config: BuildConfig = BuildConfig()
) -> tuple[dict[str, list[dict]], list[Issue], Counter]:
    """Records of every spec of ``source``, by split, with the issues met and some counters."""
    by_split: dict[str, list[dict]] = {}
    issues: list[Issue] = []
    stats: Counter = Counter()
    for records, image_issues, image_stats in iter_image_results(source, config):
        for record in records:
            by_split.setdefault(record["source"]["split"], []).append(record)
        issues.extend(image_issues)
        stats.update(image_stats)
    return by_split, issues, stats


class _SplitTables:
    """Records gathered per split and turned into Arrow tables every ``chunk`` records, so a large
    build holds compact Arrow data rather than millions of Python dicts."""

    def __init__(self, schema: Any, chunk: int = 4096) -> None:
        self.schema = schema
        self.chunk = chunk
        self.pending: dict[str, list[dict]] = {}
        self.tables: dict[str, list[Any]] = {}
        self.counts: Counter = Counter()
        self.tasks: Counter = Counter()

    def add(self, record: dict) -> None:
        split = record["source"]["split"]
        self.counts[split] += 1
        self.tasks[record["task"]] += 1
        pending = self.pending.setdefault(split, [])
        pending.append(record)
        if len(pending) >= self.chunk:
            self._flush(split)

    def _flush(self, split: str) -> None:
        import pyarrow as pa

        # pyarrow's C++ conversion: about 3x faster than Dataset.from_list
        self.tables.setdefault(split, []).append(
            pa.Table.from_pylist(self.pending.pop(split, []), schema=self.schema)
        )

    def finish(self) -> dict[str, Any]:
        """One table per split that has records (datasets cannot reload an empty saved split)."""
        import pyarrow as pa

        for split in list(self.pending):
            self._flush(split)
        return {split: pa.concat_tables(tables) for split, tables in sorted(self.tables.items())}


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _dir_summary(path: Path) -> list[int]:
    """[file count, total bytes, latest mtime] of a folder's files (cheap change detection)."""
    count = total = latest = 0
    if path.is_dir():
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_file():
                    info = entry.stat()
                    count += 1
                    total += info.st_size
                    latest = max(latest, info.st_mtime_ns)
    return [count, total, latest]


def fingerprint(
    kind: str, input_files: Sequence[Path], image_root: Path, params: dict[str, Any], config: BuildConfig
) -> str:
    """SHA-256 over the records version, the inputs' contents, the image folder summary and params."""
    from text4seg import __version__

    payload = {
        "records_version": RECORDS_VERSION,
        "text4seg": __version__,
        "kind": kind,
        "inputs": [[str(Path(p).resolve()), _file_digest(Path(p))] for p in input_files],
        "image_root": [str(image_root.resolve()), _dir_summary(image_root)],
        "params": params,
        "config": config.cache_key(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def read_report(out_dir: str | Path) -> dict[str, Any] | None:
    """The build report of a finished build in ``out_dir``, or None."""
    path = Path(out_dir) / REPORT_NAME
    if not path.is_file() or not (Path(out_dir) / "dataset_dict.json").is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that holds something other than a previous build."""
    if out_dir.is_file() or (
        out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / REPORT_NAME).exists()
    ):
        raise FileExistsError(f"{out_dir} exists and is not a text4seg build; choose another output folder")


def _replace_dir(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + f".old-{os.getpid()}")
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)


@contextmanager
def _quiet_datasets(quiet: bool) -> Iterator[None]:
    """Silence the `datasets` progress bars while saving when ``quiet``."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet and not was_disabled:
            enable_progress_bars()


def write_dataset(
    sources: Sequence[Source],
    out_dir: str | Path,
    config: BuildConfig,
    *,
    key: str = "",
    params: dict[str, Any] | None = None,
    load_seconds: float = 0.0,
) -> BuildResult:
    """Build the records of ``sources``, save them to ``out_dir`` with a build report.

    ``load_seconds`` (time spent reading the sources) is added to the report's timings."""
    from datasets import Dataset, DatasetDict

    start = time.perf_counter()
    out_dir = Path(out_dir)
    _check_out_dir(out_dir)
    features = record_features(config.image_paths)
    tables = _SplitTables(features.arrow_schema)
    issues: list[Issue] = [issue for source in sources for issue in source.issues]
    stats: Counter = Counter()
    for source in sources:
        for records, image_issues, image_stats in iter_image_results(source, config):
            for record in records:
                tables.add(record)
            issues.extend(image_issues)
            stats.update(image_stats)
    dataset = DatasetDict({split: Dataset(table) for split, table in tables.finish().items()})
    records_done = time.perf_counter()
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_datasets(not config.progress):
        dataset.save_to_disk(str(tmp))
    end = time.perf_counter()
    elapsed = end - start + load_seconds
    total = sum(tables.counts.values())
    report = {
        "fingerprint": key,
        "records_version": RECORDS_VERSION,
        "params": params or {},
        "config": {**asdict(config), "grid": list(config.fmt.grid)},
        "inputs": [str(p) for source in sources for p in source.input_files],
        "records": {split: len(dataset[split]) for split in dataset},
        "records_total": total,
        "records_by_task": dict(tables.tasks),
        "skipped_total": len(issues),
        "skipped_by_reason": dict(Counter(issue.reason for issue in issues)),
        "skipped": [issue.to_dict() for issue in issues],
        "stats": dict(stats),
        "seconds": round(elapsed, 3),
        "seconds_by_phase": {
            "load": round(load_seconds, 3),
            "records": round(records_done - start, 3),
            "write": round(end - records_done, 3),
        },
        "records_per_second": round(total / elapsed, 1) if elapsed > 0 else None,
    }
    (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2), encoding="utf-8")
    _replace_dir(tmp, out_dir)
    from datasets import load_from_disk

    return BuildResult(load_from_disk(str(out_dir)), out_dir, {**report, "cache": "built"})


def build(
    kind: str,
    ann: str | Path,
    images: str | Path,
    out_dir: str | Path,
    config: BuildConfig = BuildConfig(),
    *,
    instances: str | Path | None = None,
    splits: Sequence[str] | None = None,
    dataset_name: str | None = None,
    tasks: Sequence[str] | None = None,
    reuse_cache: bool = True,
) -> BuildResult:
    """Load ``kind`` (``coco``, ``refcoco`` or ``grefcoco``) annotations and build its records.

    ``ann`` is the instances json (coco; several via a list), the refs pickle (refcoco/+/g) or the
    grefs json (grefcoco). ``instances`` defaults to ``instances.json`` next to ``ann``. ``splits``
    keeps only those splits (for coco it filters files named ``instances_{split}.json``). When
    ``out_dir`` holds a build with the same fingerprint it is loaded instead of rebuilt.
    """
    from .coco import TASKS, load_coco, split_from_filename
    from .refer import load_grefcoco, load_refcoco

    ann_files = [Path(p) for p in (ann if isinstance(ann, (list, tuple)) else [ann])]
    image_root = Path(images)
    if kind == "coco":
        input_files = [p for p in ann_files if not splits or split_from_filename(p) in splits]
        if not input_files:
            raise ValueError(
                f"no annotation file is named instances_<split>.json for splits {list(splits or [])}"
            )
    elif kind in ("refcoco", "grefcoco"):
        if len(ann_files) != 1:
            raise ValueError(f"{kind} takes one annotation file, got {len(ann_files)}")
        instances_file = Path(instances) if instances else ann_files[0].parent / "instances.json"
        input_files = [ann_files[0], instances_file]
    else:
        raise ValueError(f"unknown dataset kind {kind!r}; expected coco, refcoco or grefcoco")
    for path in input_files:
        if not path.is_file():
            raise FileNotFoundError(f"annotation file {path} does not exist")
    params = {
        "kind": kind,
        "splits": list(splits) if splits else None,
        "dataset_name": dataset_name,
        "tasks": list(tasks) if tasks else None,
    }
    key = fingerprint(kind, input_files, image_root, params, config)
    if reuse_cache:
        previous = read_report(out_dir)
        clean = not (config.strict and previous and previous.get("skipped_total"))
        if previous is not None and previous.get("fingerprint") == key and clean:
            from datasets import load_from_disk

            return BuildResult(load_from_disk(str(out_dir)), Path(out_dir), {**previous, "cache": "reused"})
    load_start = time.perf_counter()
    if kind == "coco":
        sources = [
            load_coco(
                p,
                image_root,
                tasks=tasks or TASKS,
                seed=config.seed,
                dataset=dataset_name or "coco",
                strict=config.strict,
            )
            for p in input_files
        ]
    elif kind == "refcoco":
        sources = [
            load_refcoco(
                ann_files[0],
                image_root,
                instances_file=input_files[1],
                dataset=dataset_name or "refcoco",
                splits=splits,
                strict=config.strict,
            )
        ]
    else:
        sources = [
            load_grefcoco(
                ann_files[0],
                image_root,
                instances_file=input_files[1],
                dataset=dataset_name or "grefcoco",
                splits=splits,
                strict=config.strict,
            )
        ]
    load_seconds = time.perf_counter() - load_start
    return write_dataset(sources, out_dir, config, key=key, params=params, load_seconds=load_seconds)


def to_llava_json(
    dataset: Dataset | DatasetDict, out_path: str | Path, image_root: str | Path | None = None
) -> int:
    """Export records as the LLaVA-style list of Text4Seg's released data; returns the count.

    Each item is ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n…"},
    {"from": "gpt", "value": answer}]}``; ``image`` is the path relative to ``image_root`` when
    the image lies under it, else the annotation's ``file_name``.
    """
    from datasets import DatasetDict, Image, List, concatenate_datasets

    if isinstance(dataset, DatasetDict):
        dataset = concatenate_datasets([dataset[split] for split in sorted(dataset)])
    dataset = dataset.select_columns(["id", "images", "messages", "source"])
    if isinstance(dataset.features["images"].feature, Image):
        with _quiet_datasets(True):
            dataset = dataset.cast_column("images", List(Image(decode=False)))
    root = Path(image_root).resolve() if image_root else None
    items = []
    for record in dataset:
        first = record["images"][0] if record["images"] else None
        path = first["path"] if isinstance(first, dict) else first
        image = record["source"]["file_name"]
        if root is not None and path and Path(path).resolve().is_relative_to(root):
            image = Path(path).resolve().relative_to(root).as_posix()
        user, assistant = record["messages"][0], record["messages"][1]
        question = " ".join(part["text"] for part in user["content"] if part["type"] == "text")
        answer = "".join(part["text"] for part in assistant["content"] if part["type"] == "text")
        items.append(
            {
                "id": record["id"],
                "image": image,
                "conversations": [
                    {"from": "human", "value": f"<image>\n{question}"},
                    {"from": "gpt", "value": answer},
                ],
            }
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return len(items)
