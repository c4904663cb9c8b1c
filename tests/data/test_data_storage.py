"""Storage of a build: with image_store="folder" each image is stored once inside the build folder,
records hold paths relative to it, and `load_records` resolves them wherever the folder is moved."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from text4seg.data import load_records
from text4seg.data.build import REPORT_NAME, BuildConfig
from text4seg.protocol.images import read_record_image

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_config_spellings():
    assert BuildConfig(image_paths=True).image_store == "paths"
    assert BuildConfig(image_store="folder").image_paths  # images are strings in the schema
    assert BuildConfig().cache_key()["image_store"] == "embed"
    with pytest.raises(ValueError, match="image_store"):
        BuildConfig(image_store="cloud")


def test_each_image_is_stored_once_and_the_folder_can_move(synth, built, build_kind, tmp_path):
    out = tmp_path / "once"
    config = BuildConfig(image_store="folder", progress=False)
    result = build_kind("refcoco", synth, out, config=config)
    raw = load_from_disk(str(out))
    names = {r["source"]["file_name"] for split in raw.values() for r in split}
    values = {v for split in raw.values() for vs in split["images"] for v in vs}
    assert values == {f"images/{name}" for name in names}
    stored = sorted(
        p.relative_to(out / "images").as_posix() for p in (out / "images").rglob("*") if p.is_file()
    )
    assert stored == sorted(names)
    records = sum(len(split) for split in raw.values())
    assert records > len(names)  # several sentences per image, one stored file
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["images_stored"] == len(names) and report["config"]["image_store"] == "folder"
    assert result.dataset["train"][0]["images"][0] == str(out.resolve() / raw["train"][0]["images"][0])

    moved = tmp_path / "elsewhere" / "records"
    moved.parent.mkdir()
    out.rename(moved)
    dataset = load_records(moved)
    record = dataset["train"].shuffle(seed=0).select(range(3))[0]
    path = record["images"][0]
    assert path.startswith(str(moved.resolve())) and str(out) not in path
    expected = (synth.images / record["source"]["file_name"]).read_bytes()
    assert (moved / "images" / record["source"]["file_name"]).read_bytes() == expected
    assert read_record_image(path).size == (record["width"], record["height"])
    assert _size(moved) < _size(built["refcoco"].out_dir)


def test_folder_build_is_reused_resolved(synth, build_kind, tmp_path):
    config = BuildConfig(image_store="folder", progress=False)
    build_kind("refcoco", synth, tmp_path / "o", splits=["val"], config=config)
    again = build_kind("refcoco", synth, tmp_path / "o", splits=["val"], config=config)
    assert again.report["cache"] == "reused"
    assert again.dataset["val"][0]["images"][0].startswith(str((tmp_path / "o").resolve()))


def test_other_builds_load_as_saved(built):
    dataset = load_records(built["refcoco"].out_dir)
    assert dataset["val"][0]["images"][0].size == (dataset["val"][0]["width"], dataset["val"][0]["height"])
