"""A build's records written as Arrow files in the layout `datasets.save_to_disk` writes, with pyarrow alone.

Writing never imports `datasets` (2 s of CPU and 175 MiB, more than a whole small build): worker
processes turn the records of a chunk of images into one Arrow table per split (`build_chunk`) and send
it back as Arrow IPC bytes (one copy, instead of pickling every record dict; a build in one process
hands the table over as is); `RecordFiles` appends the
tables, in image order, to one Arrow stream file per split and writes the ``state.json``,
``dataset_info.json`` and ``dataset_dict.json`` that `datasets.load_from_disk` reads. Only one chunk's
records are ever Python objects, in any process.

The files are cut into record batches of `BATCH_ROWS` records whatever the chunks, so they are byte for
byte the same whatever ``num_proc``.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sys
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from text4seg.protocol.records import record_feature_spec

from .issues import Issue
from .records import ImageJob, build_images

CHUNK_IMAGES = 32
"""Most images per chunk, the unit of work of a worker (fewer when there are few images per process)."""

BATCH_ROWS = {"embed": 100, "paths": 1000, "folder": 1000}
"""Records per Arrow record batch in the files, by image store (as `datasets` writes: 1,000 rows, 100 when
rows hold image bytes), whatever the chunks were."""

DATA_FILE = "data-00000-of-00001.arrow"

_VALUE_TYPES = {"string": "string", "int32": "int32", "int64": "int64", "float32": "float32"}


def arrow_type(spec: dict[str, Any]) -> Any:
    """The pyarrow type `datasets` stores a feature of ``spec`` (its ``to_dict`` form) as."""
    import pyarrow as pa

    kind = spec.get("_type")
    if kind == "Value":
        return getattr(pa, _VALUE_TYPES[spec["dtype"]])()
    if kind == "List":
        return pa.list_(arrow_type(spec["feature"]))
    if kind == "Image":
        return pa.struct({"bytes": pa.binary(), "path": pa.string()})
    if kind is None:
        return pa.struct({name: arrow_type(sub) for name, sub in spec.items()})
    raise ValueError(f"no Arrow type for feature {spec!r}")


class _NoPandas:
    """A meta-path finder that refuses to import pandas."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ImportError("pandas is not needed to write records")


def pyarrow_without_pandas() -> None:
    """Let pyarrow convert Python objects without importing pandas (about 1 s of CPU per process).

    pyarrow imports pandas on its first conversion of Python objects, only to recognise pandas objects
    among them; this makes that first attempt fail, so it never tries again (an explicit pandas call,
    e.g. ``to_pandas``, still imports it). For processes that convert only records: build workers and
    the `text4seg build` command, never a library caller's process. No-op once pandas is imported."""
    import pyarrow as pa

    if "pandas" in sys.modules:
        return
    blocker = _NoPandas()
    sys.meta_path.insert(0, blocker)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(blocker)


@lru_cache(maxsize=2)
def record_schema(image_paths: bool) -> Any:
    """The Arrow schema of a record, with the ``huggingface`` metadata `datasets` writes (the same as
    ``record_features(image_paths).arrow_schema``)."""
    import pyarrow as pa

    spec = record_feature_spec(image_paths)
    metadata = {"huggingface": json.dumps({"info": {"features": spec}})}
    return pa.schema([(name, arrow_type(sub)) for name, sub in spec.items()], metadata=metadata)


@dataclass
class ChunkOutput:
    """What a chunk of images gives: per split, its records as an Arrow table (sent to another process
    as Arrow IPC stream bytes: `__getstate__`; `RecordFiles.add` takes either); the issues met,
    counters, and (``image_store="folder"``) the image files to store, relative path -> source file."""

    images: int
    tables: dict[str, Any] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    tasks: Counter = field(default_factory=Counter)
    issues: list[Issue] = field(default_factory=list)
    stats: Counter = field(default_factory=Counter)
    files: dict[str, str] = field(default_factory=dict)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a worker's result) with its tables as IPC bytes: one copy, no per-record objects."""
        state = dict(self.__dict__)
        state["tables"] = {split: _ipc_bytes(table) for split, table in self.tables.items()}
        return state


def _ipc_bytes(table: Any) -> bytes:
    """An Arrow table as IPC stream bytes (bytes are returned as they are)."""
    import pyarrow as pa

    if isinstance(table, bytes):
        return table
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _as_table(data: Any) -> Any:
    """A chunk's table, read back from IPC bytes when it came from another process."""
    import pyarrow as pa

    return pa.ipc.open_stream(pa.py_buffer(data)).read_all() if isinstance(data, bytes) else data


def _embed(records: list[dict]) -> None:
    """Put each image's bytes in its record, as ``save_to_disk`` embeds a `datasets.Image` (the bytes,
    and the file's base name as its path); a file is read once per chunk."""
    cache: dict[str, bytes] = {}
    for record in records:
        for image in record["images"]:
            path = image["path"]
            if path not in cache:
                cache[path] = Path(path).read_bytes()
            image["bytes"], image["path"] = cache[path], os.path.basename(path)


def arrow_table(records: list[dict], image_store: str) -> Any:
    """Records as one Arrow table of the record schema; with ``image_store="embed"`` the image files'
    bytes are read into them first (the records are changed in place)."""
    import pyarrow as pa

    if image_store == "embed":
        _embed(records)
    return pa.Table.from_pylist(records, schema=record_schema(image_store != "embed"))


def arrow_bytes(records: list[dict], image_store: str) -> bytes:
    """`arrow_table` as Arrow IPC stream bytes."""
    return _ipc_bytes(arrow_table(records, image_store))


def _note_files(out: ChunkOutput, job: ImageJob, records: list[dict]) -> None:
    """With ``image_store="folder"``: which source file goes to the records' image path."""
    if job.config.image_store == "folder" and records:
        relative = records[0]["images"][0]
        out.files.setdefault(relative, str(job.image_root / relative.split("/", 1)[1]))


def build_chunk(jobs: list[ImageJob]) -> ChunkOutput:
    """The records of a chunk of images (`text4seg.data.records.build_images`) as Arrow, by split."""
    out = ChunkOutput(images=len(jobs))
    by_split: dict[str, list[dict]] = {}
    for job, (records, issues, stats) in zip(jobs, build_images(jobs), strict=True):
        _note_files(out, job, records)
        for record in records:
            by_split.setdefault(record["source"]["split"], []).append(record)
            out.tasks[record["task"]] += 1
        out.issues.extend(issues)
        out.stats.update(stats)
    for split, records in by_split.items():
        out.counts[split] = len(records)
        out.tables[split] = arrow_table(records, jobs[0].config.image_store)
    return out


class RecordFiles:
    """The records of a build, appended chunk by chunk to one Arrow stream file per split under
    ``folder``; `save_to_disk` completes the `datasets` layout there and moves it to its place (the
    method `text4seg.data.storage.save_atomically` calls). ``counts``, ``tasks``, ``issues``, ``stats``
    and ``files`` gather what the chunks said."""

    def __init__(self, folder: Path, image_store: str, fingerprint: str = "") -> None:
        self.folder = Path(folder)
        image_paths = image_store != "embed"
        self.schema = record_schema(image_paths)
        self.spec = record_feature_spec(image_paths)
        self.batch_rows = BATCH_ROWS[image_store]
        self.fingerprint = fingerprint or secrets.token_hex(16)
        self.writers: dict[str, Any] = {}
        self.pending: dict[str, list[Any]] = {}
        self.counts: Counter = Counter()
        self.tasks: Counter = Counter()
        self.issues: list[Issue] = []
        self.stats: Counter = Counter()
        self.files: dict[str, Path] = {}
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)

    def add(self, chunk: ChunkOutput) -> None:
        """Append a chunk's tables (chunks must come in image order) and gather its counts."""
        for split, data in chunk.tables.items():
            self.pending.setdefault(split, []).append(_as_table(data))
            self._write(split, final=False)
        self.counts.update(chunk.counts)
        self.tasks.update(chunk.tasks)
        self.issues.extend(chunk.issues)
        self.stats.update(chunk.stats)
        for relative, source in chunk.files.items():
            self.files.setdefault(relative, Path(source))

    def _write(self, split: str, final: bool) -> None:
        """Write the split's pending records in batches of ``batch_rows``; the rest too when ``final``."""
        import pyarrow as pa

        pending = self.pending.pop(split, [])
        rows = sum(table.num_rows for table in pending)
        if rows < self.batch_rows and not final:
            self.pending[split] = pending
            return
        table = pa.concat_tables(pending)
        start = 0
        while table.num_rows - start >= self.batch_rows or (final and start < table.num_rows):
            self._writer(split).write_table(table.slice(start, self.batch_rows).combine_chunks())
            start += self.batch_rows
        if start < table.num_rows:
            self.pending[split] = [table.slice(start)]

    def _writer(self, split: str) -> Any:
        import pyarrow as pa

        if split not in self.writers:
            (self.folder / split).mkdir()
            sink = pa.OSFile(str(self.folder / split / DATA_FILE), "wb")
            self.writers[split] = (sink, pa.ipc.new_stream(sink, self.schema))
        return self.writers[split][1]

    def close(self) -> None:
        """Close the open files (idempotent)."""
        for sink, writer in self.writers.values():
            writer.close()
            sink.close()
        self.writers = {}

    def _finish(self) -> list[str]:
        """Close the files and write the json files `datasets.load_from_disk` reads; the splits."""
        for split in list(self.pending):
            self._write(split, final=True)
        splits = sorted(self.writers)
        self.close()
        info = {"citation": "", "description": "", "features": self.spec, "homepage": "", "license": ""}
        for split in splits:
            _write_json(self.folder / split / "dataset_info.json", info, sort_keys=False)
            _write_json(self.folder / split / "state.json", self._state(split), sort_keys=True)
        (self.folder / "dataset_dict.json").write_text(json.dumps({"splits": splits}), encoding="utf-8")
        return splits

    def _state(self, split: str) -> dict[str, Any]:
        digest = hashlib.sha256(f"{self.fingerprint}/{split}".encode()).hexdigest()[:16]
        return {
            "_data_files": [{"filename": DATA_FILE}],
            "_fingerprint": digest,
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }

    def save_to_disk(self, path: str | Path) -> None:
        """Finish the files and move them into the folder ``path`` (on the same file system)."""
        splits = self._finish()
        target = Path(path)
        target.mkdir(parents=True, exist_ok=True)
        for name in [*splits, "dataset_dict.json"]:
            (self.folder / name).rename(target / name)

    def discard(self) -> None:
        """Close and delete whatever is left of the working folder."""
        self.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _write_json(path: Path, value: dict[str, Any], sort_keys: bool) -> None:
    with path.open("w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=sort_keys)
