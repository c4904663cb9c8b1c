"""Arrow files written with pyarrow alone: the layout and bytes `datasets.save_to_disk` would write, read
back by `datasets.load_from_disk`, the same whatever the chunks or the process count, and a build that
never imports `datasets`."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import pytest
from datasets import Dataset, DatasetDict, load_from_disk

from text4seg.data.arrow_files import (
    BATCH_ROWS,
    ChunkOutput,
    RecordFiles,
    arrow_bytes,
    arrow_table,
    record_schema,
)
from text4seg.data.build import BuildConfig, build_records
from text4seg.data.refer import load_refcoco
from text4seg.protocol.records import record_features

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.mark.parametrize("image_paths", [False, True])
def test_schema_is_the_one_datasets_derives_from_the_record_features(image_paths):
    expected = record_features(image_paths).arrow_schema
    assert record_schema(image_paths).equals(expected, check_metadata=True)


def _records(synth, store: str) -> dict[str, list[dict]]:
    config = BuildConfig(image_store=store, progress=False)
    by_split, issues, _ = build_records(load_refcoco(synth.refs, synth.images), config)
    assert by_split and not issues
    return by_split


def _chunked(by_split: dict[str, list[dict]], store: str, size: int, sent: bool = True) -> list[ChunkOutput]:
    """The records cut into chunks of ``size`` per split, as workers would send them (``sent``: as IPC
    bytes) or a build in one process hands them over (tables)."""
    chunks = []
    for split, records in by_split.items():
        for start in range(0, len(records), size):
            part = copy.deepcopy(records[start : start + size])  # embedding changes them
            tables = {split: (arrow_bytes if sent else arrow_table)(part, store)}
            chunks.append(ChunkOutput(images=1, tables=tables, counts={split: len(part)}))
    return chunks


def _write(by_split, store, size, folder, sent=True):
    files = RecordFiles(folder.with_name(folder.name + ".work"), store, fingerprint="f")
    for chunk in _chunked(by_split, store, size, sent):
        files.add(chunk)
    files.save_to_disk(folder)
    files.discard()
    return folder


@pytest.mark.parametrize("store", ["paths", "embed"])
def test_files_load_as_what_save_to_disk_writes(synth, tmp_path, store):
    by_split = _records(synth, store)
    expected_dir = tmp_path / "datasets"
    features = record_features(store != "embed")
    DatasetDict(
        {s: Dataset.from_list(r, features=features) for s, r in sorted(by_split.items())}
    ).save_to_disk(str(expected_dir))
    ours = load_from_disk(str(_write(by_split, store, 7, tmp_path / "ours")))
    expected = load_from_disk(str(expected_dir))
    assert list(ours) == list(expected) == sorted(by_split)
    for split in expected:
        assert ours[split].features == expected[split].features
        assert ours[split].data.table.equals(expected[split].data.table)
        assert ours[split].data.table.schema.equals(expected[split].data.table.schema, check_metadata=True)
    for name in ("dataset_dict.json", "train/dataset_info.json"):
        assert (tmp_path / "ours" / name).read_text() == (expected_dir / name).read_text()


def test_record_batches_do_not_depend_on_the_chunks(synth, tmp_path):
    by_split = _records(synth, "paths")
    small = _write(by_split, "paths", 3, tmp_path / "small")
    large = _write(by_split, "paths", 500, tmp_path / "large")
    for split in by_split:
        data = (small / split / "data-00000-of-00001.arrow").read_bytes()
        assert data == (large / split / "data-00000-of-00001.arrow").read_bytes()


def test_batches_are_cut_at_the_batch_size(synth, tmp_path, monkeypatch):
    import pyarrow as pa

    monkeypatch.setitem(BATCH_ROWS, "paths", 10)
    by_split = _records(synth, "paths")
    folder = _write(by_split, "paths", 7, tmp_path / "out")
    reader = pa.ipc.open_stream(pa.memory_map(str(folder / "train" / "data-00000-of-00001.arrow")))
    sizes = [batch.num_rows for batch in reader]
    total = len(by_split["train"])
    assert sizes == [10] * (total // 10) + ([total % 10] if total % 10 else [])


@pytest.mark.parametrize("store", ["folder", "embed"])
def test_one_and_two_processes_write_the_same_bytes(synth, build_kind, tmp_path, store):
    outs = []
    for num_proc in (1, 2):
        config = BuildConfig(num_proc=num_proc, image_store=store, progress=False)
        outs.append(build_kind("refcoco", synth, tmp_path / f"p{num_proc}", config=config).out_dir)
    for split in ("train", "val", "test"):
        name = f"{split}/data-00000-of-00001.arrow"
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()


def test_a_build_does_not_import_datasets_until_its_records_are_read(synth, tmp_path):
    script = (
        "import sys\n"
        "from text4seg.data.build import BuildConfig, build\n"
        f"result = build('refcoco', {str(synth.refs)!r}, {str(synth.images)!r}, {str(tmp_path / 'out')!r},"
        " BuildConfig(progress=False, num_proc=2))\n"
        "assert 'datasets' not in sys.modules, 'imported by the build'\n"
        "assert len(result.dataset['train']) == result.report['records']['train']\n"
        "assert 'datasets' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_build_command_converts_records_without_importing_pandas(synth, tmp_path):
    script = (
        "import sys\n"
        "from text4seg.data.arrow_files import pyarrow_without_pandas\n"
        "from text4seg.data.build import BuildConfig, build\n"
        "pyarrow_without_pandas()\n"
        f"build('refcoco', {str(synth.refs)!r}, {str(synth.images)!r}, {str(tmp_path / 'out')!r},"
        " BuildConfig(progress=False))\n"
        "assert 'pandas' not in sys.modules, 'imported by the build'\n"
        "import pandas, pyarrow\n"  # pandas still works with pyarrow afterwards
        "table = pyarrow.Table.from_pandas(pandas.DataFrame({'a': [1.0, None]}))\n"
        "assert table.column('a').null_count == 1 and table.to_pandas()['a'].isna().sum() == 1\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_tables_handed_over_or_sent_write_the_same_bytes(synth, tmp_path):
    """In one process a chunk's tables are handed over as they are; pickled (to leave a worker) they
    travel as IPC bytes; the files are the same."""
    by_split = _records(synth, "paths")
    chunk = _chunked(by_split, "paths", 5, sent=False)[0]
    sent = pickle.loads(pickle.dumps(chunk))
    assert all(isinstance(v, bytes) for v in sent.tables.values())
    assert not any(isinstance(v, bytes) for v in chunk.tables.values())
    handed = _write(by_split, "paths", 5, tmp_path / "handed", sent=False)
    pickled = _write(by_split, "paths", 5, tmp_path / "pickled", sent=True)
    for split in by_split:
        data = (handed / split / "data-00000-of-00001.arrow").read_bytes()
        assert data == (pickled / split / "data-00000-of-00001.arrow").read_bytes()
