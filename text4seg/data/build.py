"""Record specs -> chat training records (docs/RECORDS.md), saved as a `datasets.DatasetDict`.

`build` reads a source of the `text4seg.data.sources.SOURCES` table, makes the records of each image
(`text4seg.data.records`) in ``num_proc`` worker processes (`text4seg.data.workers`; results come
back in image order, so the output does not depend on ``num_proc``) and stores them
(`text4seg.data.storage`: Arrow batches, atomic folder write, fingerprint cache, build report).

Bad input is skipped, counted and listed in ``build_report.json`` (id, reason, detail, file): what
the main process met reading the files first, then image by image in image id order (refcoco and
grefcoco check each image's annotations and refs where its records are made); with ``strict`` the
first problem in that order raises `DataError`, whatever ``num_proc``. A fingerprint of the input files and parameters
is stored in that report; `build` returns the saved dataset unchanged when it matches.

`BuildConfig`, `BuildResult`, `to_llava_json`, `REPORT_NAME`, `RECORDS_VERSION`, `fingerprint` and
`read_report` stay importable from here.
"""

from __future__ import annotations

import gc
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .annotations import Source
from .arrow_files import CHUNK_IMAGES, ChunkOutput, RecordFiles, build_chunk, pyarrow_without_pandas
from .config import BuildConfig, BuildResult, Deferred
from .export import to_llava_json
from .issues import Issue
from .records import ImageResult, build_image, build_images, image_jobs
from .sources import SourceRequest, source_kind
from .storage import (
    RECORDS_VERSION,
    REPORT_NAME,
    build_report,
    check_out_dir,
    fingerprint,
    load_records,
    read_report,
    save_atomically,
)
from .workers import chunk_map, ordered_map

__all__ = [
    "RECORDS_VERSION",
    "REPORT_NAME",
    "BuildConfig",
    "BuildResult",
    "build",
    "build_image",
    "build_records",
    "fingerprint",
    "iter_image_results",
    "load_records",
    "read_report",
    "to_llava_json",
    "write_dataset",
]


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _progress(total: int, source: Source, config: BuildConfig) -> Any:
    """A tqdm bar over the images of ``source``, or (``config.progress`` off) a stand-in that skips
    importing tqdm (0.2 s of CPU)."""
    if not config.progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"{source.dataset}: images", unit="img")


def iter_image_results(source: Source, config: BuildConfig | None = None) -> Iterator[ImageResult]:
    """(records, issues, counters) for each image of ``source``, in image order, with a progress bar;
    images are spread over ``config.num_proc`` processes (`BuildError` if one dies)."""
    config = config or BuildConfig()
    jobs = image_jobs(source, config)
    results = ordered_map(build_images, jobs, config.num_proc, what=f"{source.dataset} images")
    with _progress(len(jobs), source, config) as bar:
        for result in results:
            bar.update(1)
            yield result


def build_records(
    source: Source, config: BuildConfig | None = None
) -> tuple[dict[str, list[dict]], list[Issue], Counter]:
    """Records of every spec of ``source``, by split, with the issues met and some counters."""
    config = config or BuildConfig()
    by_split: dict[str, list[dict]] = {}
    issues: list[Issue] = []
    stats: Counter = Counter()
    for records, image_issues, image_stats in iter_image_results(source, config):
        for record in records:
            by_split.setdefault(record["source"]["split"], []).append(record)
        issues.extend(image_issues)
        stats.update(image_stats)
    return by_split, issues, stats


def iter_chunks(source: Source, config: BuildConfig) -> Iterator[ChunkOutput]:
    """The records of ``source`` as Arrow tables by chunk of images (`text4seg.data.arrow_files`), in
    image order, with a progress bar; chunks are spread over ``config.num_proc`` processes (`BuildError`
    if one dies)."""
    jobs = image_jobs(source, config)
    size = max(1, min(CHUNK_IMAGES, len(jobs) // (config.num_proc * 8)))
    what = f"{source.dataset} images"
    chunks = chunk_map(build_chunk, jobs, config.num_proc, size, what, initializer=pyarrow_without_pandas)
    with _progress(len(jobs), source, config) as bar:
        for chunk in chunks:
            bar.update(chunk.images)
            yield chunk


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused (then put back as it was). A build allocates millions
    of acyclic objects (the sources' dicts and lists, the records), which reference counting frees; the
    collector would only scan them, again and again as the loaded sources grow (0.4-0.8 s of CPU in a
    6 s build). Forked workers inherit the pause."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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

    Records are written as they are made, as Arrow files in the `datasets.save_to_disk` layout
    (`text4seg.data.arrow_files`; `datasets` is not imported). ``load_seconds`` (time spent reading the
    sources) is added to the report's timings."""
    with paused_gc():
        return _write_dataset(sources, Path(out_dir), config, key, params, load_seconds)


def _write_dataset(
    sources: Sequence[Source],
    out_dir: Path,
    config: BuildConfig,
    key: str,
    params: dict[str, Any] | None,
    load_seconds: float,
) -> BuildResult:
    start = time.perf_counter()
    check_out_dir(out_dir)
    files = RecordFiles(out_dir.with_name(f"{out_dir.name}.records-{os.getpid()}"), config.image_store, key)
    try:
        for source in sources:
            for chunk in iter_chunks(source, config):
                files.add(chunk)
        records_done = time.perf_counter()
        report = build_report(
            config,
            files,
            [issue for source in sources for issue in source.issues] + files.issues,
            files.stats,
            fingerprint=key,
            params=params or {},
            inputs=[str(p) for source in sources for p in source.input_files],
            images_stored=len(files.files),
            images_bytes=sum(path.stat().st_size for path in files.files.values()),
        )
        report = _timed(report, start, records_done, load_seconds)
        report = save_atomically(
            files, out_dir, report, not config.progress, files.files, not config.copy_images
        )
    finally:
        files.discard()
    return BuildResult(Deferred(lambda: _load(out_dir, config)), out_dir, {**report, "cache": "built"})


def _load(out_dir: Path, config: BuildConfig) -> Any:
    from datasets import load_from_disk

    return load_records(out_dir) if config.image_store == "folder" else load_from_disk(str(out_dir))


def _timed(report: dict[str, Any], start: float, records_done: float, load_seconds: float) -> dict[str, Any]:
    """``report`` with its timings (taken now, just before the write)."""
    end = time.perf_counter()
    elapsed = end - start + load_seconds
    report["seconds"] = round(elapsed, 3)
    report["seconds_by_phase"] = {
        "load": round(load_seconds, 3),
        "records": round(records_done - start, 3),
        "write": round(end - records_done, 3),
    }
    report["records_per_second"] = round(report["records_total"] / elapsed, 1) if elapsed > 0 else None
    return report


def _reusable(out_dir: str | Path, key: str, config: BuildConfig) -> BuildResult | None:
    """The saved build in ``out_dir`` when its fingerprint is ``key`` (and, when strict, it was clean)."""
    previous = read_report(out_dir)
    if previous is None or previous.get("fingerprint") != key:
        return None
    if config.strict and previous.get("skipped_total"):
        return None
    return BuildResult(
        Deferred(lambda: _load(Path(out_dir), config)), Path(out_dir), {**previous, "cache": "reused"}
    )


def build(
    kind: str,
    ann: str | Path | Sequence[str | Path],
    images: str | Path,
    out_dir: str | Path,
    config: BuildConfig | None = None,
    *,
    instances: str | Path | None = None,
    splits: Sequence[str] | None = None,
    dataset_name: str | None = None,
    tasks: Sequence[str] | None = None,
    reuse_cache: bool = True,
) -> BuildResult:
    """Load ``kind`` (a name of `text4seg.data.sources.SOURCES`: ``coco``, ``refcoco`` or
    ``grefcoco``) annotations and build its records.

    ``ann`` is the instances json (coco; several via a list), the refs pickle (refcoco/+/g) or the
    grefs json (grefcoco). ``instances`` defaults to ``instances.json`` next to ``ann``. ``splits``
    keeps only those splits (for coco it filters files named ``instances_{split}.json``). When
    ``out_dir`` holds a build with the same fingerprint it is loaded instead of rebuilt. ``config``
    defaults to `BuildConfig()`.
    """
    config = config or BuildConfig()
    source = source_kind(kind)
    request = SourceRequest(
        ann_files=[Path(p) for p in (ann if isinstance(ann, (list, tuple)) else [ann])],
        image_root=Path(images),
        instances=Path(instances) if instances else None,
        splits=splits,
        dataset_name=dataset_name,
        tasks=tasks,
        seed=config.seed,
        strict=config.strict,
    )
    input_files = source.input_files(request)
    for path in input_files:
        if not path.is_file():
            raise FileNotFoundError(f"annotation file {path} does not exist")
    params = {
        "kind": kind,
        "splits": list(splits) if splits else None,
        "dataset_name": dataset_name,
        "tasks": list(tasks) if tasks else None,
    }
    key = fingerprint(kind, input_files, request.image_root, params, config)
    reused = _reusable(out_dir, key, config) if reuse_cache else None
    if reused is not None:
        return reused
    load_start = time.perf_counter()
    with paused_gc():  # one pause: re-enabled between load and write, the collector's first run would
        sources = source.load(request, input_files)  # scan every object loaded (0.25 s at 8,000 images)
        load_seconds = time.perf_counter() - load_start
        return write_dataset(sources, out_dir, config, key=key, params=params, load_seconds=load_seconds)
