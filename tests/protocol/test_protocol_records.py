"""The record contract: reading a saved dataset wherever its folder now is, and refusing paths that leave it."""

from __future__ import annotations

import shutil

import datasets
import numpy as np
import pytest
from PIL import Image

from text4seg.protocol.images import read_record_image
from text4seg.protocol.records import RecordError, load_records, record_size, stream_records


def _save(folder, image_values):
    features = datasets.Features({"id": datasets.Value("string"), "images": [datasets.Value("string")]})
    rows = {"id": [f"r{k}" for k in range(len(image_values))], "images": [[v] for v in image_values]}
    datasets.DatasetDict({"val": datasets.Dataset.from_dict(rows, features=features)}).save_to_disk(
        str(folder)
    )


def test_relative_image_paths_resolve_after_the_folder_moves(tmp_path):
    old = tmp_path / "old"
    (old / "images").mkdir(parents=True)
    Image.fromarray(np.full((4, 6, 3), 200, np.uint8)).save(old / "images" / "a.png")
    _save(old, ["images/a.png"])
    new = tmp_path / "moved"
    shutil.move(old, new)
    record = load_records(new)["val"][0]
    assert record["images"][0] == str((new / "images" / "a.png").resolve())
    assert read_record_image(record["images"][0], record["id"]).size == (6, 4)


def test_a_stream_of_a_moved_folder_resolves_its_paths_as_it_reads(tmp_path):
    old = tmp_path / "old"
    (old / "images").mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.fromarray(np.full((4, 6, 3), 100, np.uint8)).save(old / "images" / f"{name}.png")
    _save(old, ["images/a.png", "images/b.png", "images/c.png"])
    new = tmp_path / "moved"
    shutil.move(old, new)
    stream = stream_records(new, "val", num_shards=2)
    assert isinstance(stream, datasets.IterableDataset) and stream.num_shards == 2
    records = list(stream)
    assert [r["id"] for r in records] == ["r0", "r1", "r2"]
    assert [r["images"][0] for r in records] == [str((new / "images" / f"{n}.png").resolve()) for n in "abc"]
    with pytest.raises(KeyError, match="no split 'train' \\(it has val\\)"):
        stream_records(new, "train")
    _save(tmp_path / "bad", ["../secret.png"])
    with pytest.raises(RecordError, match="leaves the dataset folder"):
        list(stream_records(tmp_path / "bad", "val"))


def test_a_relative_path_that_leaves_the_folder_is_refused(tmp_path):
    _save(tmp_path / "data", ["../secret.png"])
    with pytest.raises(RecordError, match="r0.*leaves the dataset folder"):
        load_records(tmp_path / "data")["val"][0]


def test_a_missing_folder_and_a_huge_claimed_size_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_records(tmp_path / "nowhere")
    with pytest.raises(RecordError, match="over the limit"):
        record_size({"id": "big", "height": 30000, "width": 30000})
