"""Storage of a build: records batched into Arrow tables, the folder written atomically, the
fingerprint that lets an unchanged build be reused, and the build report beside the records."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .config import BuildConfig

RECORDS_VERSION = 2
"""Bumped whenever the records written for the same inputs change (invalidates caches)."""

REPORT_NAME = "build_report.json"


class SplitTables:
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


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
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
        "inputs": [[str(Path(p).resolve()), file_digest(Path(p))] for p in input_files],
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
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):  # a damaged report: rebuild
        return None


def check_out_dir(out_dir: Path) -> None:
    """Refuse to replace a folder that holds something other than a previous build."""
    if out_dir.is_file() or (
        out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / REPORT_NAME).exists()
    ):
        raise FileExistsError(f"{out_dir} exists and is not a text4seg build; choose another output folder")


def replace_dir(tmp: Path, out_dir: Path) -> None:
    """Put the finished folder ``tmp`` at ``out_dir`` by renames (the old one is removed after)."""
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + f".old-{os.getpid()}")
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(out_dir)


@contextmanager
def quiet_datasets(quiet: bool) -> Iterator[None]:
    """Silence the `datasets` progress bars while saving when ``quiet`` (nothing to do, and nothing
    imported, when `datasets` is not loaded: a build writes its Arrow files without it)."""
    if "datasets" not in sys.modules:
        yield
        return
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        yield
    finally:
        if quiet and not was_disabled:
            enable_progress_bars()


def store_images(files: dict[str, Path], folder: Path, link: bool = True) -> dict[str, int]:
    """Put each image at ``folder / relative path`` once: a hard link to the source file when ``link``
    and the file system allows it (same device, permitted), else a copy. Never a symbolic link: the
    folder must keep working when moved or copied elsewhere. Returns ``{"linked": n, "copied": m}``.

    A hard link shares the file with the source: a tool that rewrites a source image *in place* changes
    the build's image too (the next build sees the changed folder and rebuilds). Build with
    ``copy_images`` (``link=False``) where sources are edited in place."""
    counts = {"linked": 0, "copied": 0}
    made: set[Path] = set()
    for relative, source in files.items():
        target = folder / relative
        if target.parent not in made:  # once per folder, not per image
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        if link and _hard_link(source, target):
            counts["linked"] += 1
        else:
            shutil.copy2(source, target)
            counts["copied"] += 1
    return counts


def _hard_link(source: Path, target: Path) -> bool:
    """Whether ``target`` could be made a hard link to ``source`` (False: another device, a file system
    without links, or not permitted, e.g. another user's file under fs.protected_hardlinks)."""
    try:
        os.link(source, target)
    except OSError:
        return False
    return True


def save_atomically(
    dataset: Any,
    out_dir: Path,
    report: dict[str, Any],
    quiet: bool,
    images: dict[str, Path] | None = None,
    link: bool = True,
) -> dict[str, Any]:
    """Save ``dataset``, its report and ``images`` (relative path in the build -> source file, stored by
    `store_images`; ``link``: hard links where possible) into a temporary sibling folder, then rename it
    to ``out_dir``: an interrupted save leaves the previous build (or nothing) there, never a partial one.
    Returns the report as written (with ``images_linked`` and ``images_copied`` when images were stored)."""
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_datasets(quiet):
            dataset.save_to_disk(str(tmp))
        if images:
            counts = store_images(images, tmp, link)
            report = {**report, "images_linked": counts["linked"], "images_copied": counts["copied"]}
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2), encoding="utf-8")
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report


def build_report(
    config: BuildConfig, tables: SplitTables, issues: Sequence[Any], stats: Counter, **extra: Any
) -> dict[str, Any]:
    """The report saved beside the records: config, counts, every skipped item, counters; ``extra``
    (fingerprint, params, inputs, timings) is merged in."""
    return {
        "records_version": RECORDS_VERSION,
        "config": {**asdict(config), "grid": list(config.fmt.grid)},
        **report_counts(tables, issues),
        "records_by_task": dict(tables.tasks),
        "stats": dict(stats),
        **extra,
    }


def report_counts(tables: SplitTables, issues: Sequence[Any]) -> dict[str, Any]:
    """The counts every build report holds: records per split and in all, skipped items by reason, and each."""
    return {
        "records": dict(sorted(tables.counts.items())),
        "records_total": sum(tables.counts.values()),
        "skipped_total": len(issues),
        "skipped_by_reason": dict(Counter(issue.reason for issue in issues)),
        "skipped": [issue.to_dict() for issue in issues],
    }


def report_summary(report: dict[str, Any], what: str, out_dir: str | Path) -> str:
    """One or two lines for a command to print: records per split, and what was skipped and why."""
    splits = ", ".join(f"{k}: {v}" for k, v in report["records"].items()) or "none"
    lines = [f"{report['records_total']} {what} ({splits}) -> {out_dir}"]
    if report["skipped_total"]:
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(report["skipped_by_reason"].items()))
        lines.append(f"  skipped {report['skipped_total']} ({reasons}); see {Path(out_dir) / REPORT_NAME}")
    return "\n".join(lines)


def load_records(folder: str | Path) -> Any:
    """The `datasets.DatasetDict` saved by a build in ``folder``, ready to read wherever the folder now is
    (`text4seg.protocol.records.load_records`: the image paths of a build that stores each image once are
    relative to the folder and resolved as records are read)."""
    from text4seg.protocol.records import load_records as load

    return load(folder)
