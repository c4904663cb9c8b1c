"""Storage of a build: by default (image_store="folder") each image is stored once inside the build folder,
hard-linked to its source where possible, records hold paths relative to it, and `load_records` resolves
them wherever the folder is moved or copied."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil

import pytest
from datasets import load_from_disk

from text4seg.data import load_records
from text4seg.data.build import REPORT_NAME, BuildConfig
from text4seg.data.storage import store_images
from text4seg.protocol.images import read_record_image

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _size(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_config_spellings():
    assert BuildConfig().image_store == "folder" and BuildConfig().image_paths  # the default: stored once
    assert BuildConfig().cache_key()["image_store"] == "folder"
    assert BuildConfig(image_paths=True).image_store == "paths"  # the older spelling
    assert BuildConfig(image_store="embed").image_paths is False
    # a config resolved to folder, replaced by embed, embeds (image_paths does not win over a given store)
    assert dataclasses.replace(BuildConfig(), image_store="embed").image_store == "embed"
    assert "copy_images" not in BuildConfig(copy_images=True).cache_key()  # same records either way
    with pytest.raises(ValueError, match="image_store"):
        BuildConfig(image_store="cloud")


def test_each_image_is_stored_once_and_the_folder_can_move(synth, build_kind, tmp_path):
    out = tmp_path / "once"
    result = build_kind("refcoco", synth, out)  # the default layout
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
    assert report["images_linked"] + report["images_copied"] == len(names)
    assert result.dataset["train"][0]["images"][0] == str(out.resolve() / raw["train"][0]["images"][0])
    assert result.report["images_linked"] == report["images_linked"]

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
    embedded = build_kind(
        "refcoco", synth, tmp_path / "embed", config=BuildConfig(image_store="embed", progress=False)
    )
    assert _size(moved) < _size(embedded.out_dir)


def test_a_copied_folder_keeps_its_images_when_the_sources_and_the_original_are_gone(synth, tmp_path):
    from text4seg.data import make_synthetic
    from text4seg.data.build import build

    source = make_synthetic(tmp_path / "source", num_images=3, image_size=48, seed=1)
    build("refcoco", source.refs, source.images, tmp_path / "built", BuildConfig(progress=False))
    shutil.copytree(tmp_path / "built", tmp_path / "copy")  # e.g. to another machine
    shutil.rmtree(tmp_path / "source")
    shutil.rmtree(tmp_path / "built")
    split = load_records(tmp_path / "copy")["train"]
    assert all(read_record_image(r["images"][0]).size == (48, 48) for r in split)


def _files(tmp_path, n=3) -> dict:
    (tmp_path / "src" / "sub").mkdir(parents=True)
    files = {}
    for i in range(n):
        path = tmp_path / "src" / "sub" / f"{i}.png"
        path.write_bytes(b"image %d" % i)
        files[f"images/sub/{i}.png"] = path
    return files


def test_images_are_hard_linked_on_one_file_system_or_copied(tmp_path):
    files = _files(tmp_path)
    assert store_images(files, tmp_path / "linked") == {"linked": 3, "copied": 0}
    for relative, source in files.items():
        target = tmp_path / "linked" / relative
        assert os.path.samefile(target, source) and not target.is_symlink()
    assert store_images(files, tmp_path / "copied", link=False) == {"linked": 0, "copied": 3}
    for relative, source in files.items():
        target = tmp_path / "copied" / relative
        assert not os.path.samefile(target, source) and target.read_bytes() == source.read_bytes()


def test_a_link_refused_falls_back_to_a_copy(tmp_path, monkeypatch):
    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    files = _files(tmp_path, 2)
    assert store_images(files, tmp_path / "out") == {"linked": 0, "copied": 2}
    assert all((tmp_path / "out" / r).read_bytes() == s.read_bytes() for r, s in files.items())


def test_copy_images_builds_with_copies(synth, build_kind, tmp_path):
    config = BuildConfig(copy_images=True, progress=False)
    out = build_kind("refcoco", synth, tmp_path / "c", splits=["val"], config=config).out_dir
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["images_linked"] == 0 and report["images_copied"] == report["images_stored"] > 0
    stored = next((out / "images").rglob("*.*"))
    assert not os.path.samefile(stored, synth.images / stored.relative_to(out / "images"))


def test_folder_build_is_reused_resolved(synth, build_kind, tmp_path):
    build_kind("refcoco", synth, tmp_path / "o", splits=["val"])
    again = build_kind("refcoco", synth, tmp_path / "o", splits=["val"])
    assert again.report["cache"] == "reused"
    assert again.dataset["val"][0]["images"][0].startswith(str((tmp_path / "o").resolve()))


def test_embedded_builds_load_as_saved(synth, build_kind, tmp_path):
    config = BuildConfig(image_store="embed", progress=False)
    out = build_kind("refcoco", synth, tmp_path / "e", splits=["val"], config=config).out_dir
    dataset = load_records(out)
    assert dataset["val"][0]["images"][0].size == (dataset["val"][0]["width"], dataset["val"][0]["height"])
