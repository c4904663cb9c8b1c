"""The record builder: schema (docs/RECORDS.md), reproducibility, cache reuse, num_proc, exports."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from datasets import Image, List, load_from_disk

import text4seg as t4s
from text4seg.data.build import REPORT_NAME, BuildConfig, to_llava_json
from text4seg.data.safe_pickle import load_pickle
from text4seg.protocol.images import read_record_image

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

COLUMNS = {
    "id",
    "ignore",
    "images",
    "messages",
    "task",
    "expression",
    "labels",
    "grid",
    "width",
    "height",
    "masks",
    "box",
    "source",
}


def _plain(dataset) -> dict:
    """Records as stored (images not decoded, relative paths not resolved), per split, for equality checks."""
    out = {}
    for split, data in dataset.items():
        data = data.with_format(None)
        if isinstance(data.features["images"].feature, Image):
            data = data.cast_column("images", List(Image(decode=False)))
        out[split] = data.to_list()
    return out


def test_records_follow_the_schema(built, synth):
    dataset = built["refcoco"].dataset
    assert set(dataset) == {"train", "val", "test"}
    record = dataset["train"][0]
    assert set(record) == COLUMNS
    assert read_record_image(record["images"][0]).size == (record["width"], record["height"])
    user, assistant = record["messages"]
    assert user["role"] == "user" and assistant["role"] == "assistant"
    assert [part["type"] for part in user["content"]] == ["image", "text"]
    answer = assistant["content"][0]["text"]
    sentence, rest = answer.split("\n", 1)
    assert sentence and rest.startswith("<seg>") and rest.endswith("</seg>")
    (segment,) = t4s.extract_segments(answer)
    assert segment.endswith("\n") and t4s.decode(segment, strict=True).grid.shape == (16, 16)
    assert record["grid"] == [16, 16] and record["labels"][0] == "others"
    source = record["source"]
    assert set(source) == {"dataset", "split", "image_id", "ann_ids", "ref_id", "sent_id", "file_name"}
    assert source["dataset"] == "refcoco" and source["split"] == "train" and source["ref_id"] >= 0
    assert (synth.images / source["file_name"]).is_file()
    report = json.loads((built["refcoco"].out_dir / REPORT_NAME).read_text())
    assert report["records_total"] == sum(len(s) for s in dataset.values()) and report["skipped_total"] == 0


def test_same_inputs_and_seed_give_identical_records_any_num_proc(synth, built, build_kind, tmp_path):
    again = build_kind("grefcoco", synth, tmp_path / "g2", config=BuildConfig(num_proc=2, progress=False))
    assert again.report["cache"] == "built"
    assert _plain(again.dataset) == _plain(built["grefcoco"].dataset)
    reseeded = build_kind("grefcoco", synth, tmp_path / "g3", config=BuildConfig(seed=1, progress=False))
    questions = [r["messages"][0]["content"][1]["text"] for r in reseeded.dataset["train"]]
    original = [r["messages"][0]["content"][1]["text"] for r in built["grefcoco"].dataset["train"]]
    assert questions != original and len(questions) == len(original)


def test_cache_is_reused_and_invalidated(synth, build_kind, tmp_path):
    out = tmp_path / "refs"
    first = build_kind("refcoco", synth, out, splits=["val"])
    stamp = (out / "dataset_dict.json").stat().st_mtime_ns
    second = build_kind("refcoco", synth, out, splits=["val"])
    assert first.report["cache"] == "built" and second.report["cache"] == "reused"
    assert (out / "dataset_dict.json").stat().st_mtime_ns == stamp
    assert len(second.dataset["val"]) == len(first.dataset["val"])
    third = build_kind("refcoco", synth, out, splits=["val"], config=BuildConfig(grid=24, progress=False))
    assert third.report["cache"] == "built" and third.dataset["val"][0]["grid"] == [24, 24]


def test_grid_size_and_area_method(synth, build_kind, tmp_path):
    result = build_kind(
        "refcoco",
        synth,
        tmp_path / "r",
        splits=["test"],
        config=BuildConfig(grid=(24, 32), method="area", progress=False),
    )
    fmt = t4s.TEXT4SEG.with_grid((24, 32))
    for record in result.dataset["test"]:
        assert record["grid"] == [24, 32]
        mask = t4s.decode(record["messages"][1]["content"][0]["text"], fmt=fmt).grid
        size = [record["height"], record["width"]]
        from pycocotools import mask as mask_utils

        full = mask_utils.decode({"size": size, "counts": record["masks"][0].encode()}).astype(bool)
        assert np.array_equal(mask, t4s.mask_to_grid(full, (24, 32), method="area").astype(np.int32))


def test_refuses_to_overwrite_a_foreign_folder(synth, build_kind, tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_kind("refcoco", synth, out)
    assert (out / "notes.txt").read_text() == "keep me"


def test_llava_export(built, synth, tmp_path):
    dataset = built["refcoco"].dataset
    count = to_llava_json(dataset, tmp_path / "llava.json", synth.images)
    items = json.loads((tmp_path / "llava.json").read_text())
    assert count == len(items) == sum(len(s) for s in dataset.values())
    first = dataset["test"][0]
    item = next(i for i in items if i["id"] == first["id"])
    assert item["image"] == first["source"]["file_name"]
    human, gpt = item["conversations"]
    assert (
        human["from"] == "human"
        and human["value"] == "<image>\n" + first["messages"][0]["content"][1]["text"]
    )
    assert gpt["from"] == "gpt" and gpt["value"] == first["messages"][1]["content"][0]["text"]
    # read by a user without load_records (relative paths, whatever the working folder): the same items
    raw = load_from_disk(str(built["refcoco"].out_dir))
    assert to_llava_json(raw, tmp_path / "raw.json", synth.images) == count
    assert json.loads((tmp_path / "raw.json").read_text()) == items


@pytest.mark.parametrize(
    ("config", "stored"),
    [({"image_store": "embed"}, "bytes"), ({"image_paths": True}, "absolute"), ({}, "relative")],
)
def test_images_embedded_stored_as_paths_or_once(config, stored, synth, build_kind, tmp_path):
    config = BuildConfig(progress=False, **config)
    result = build_kind("refcoco", synth, tmp_path / "p", splits=["val"], config=config)
    raw = load_from_disk(str(tmp_path / "p"))["val"]
    if stored == "bytes":
        raw = raw.cast_column("images", List(Image(decode=False)))
    record = raw[0]
    file_name = record["source"]["file_name"]
    value = {
        "bytes": lambda: record["images"][0]["bytes"] == (synth.images / file_name).read_bytes(),
        "absolute": lambda: record["images"] == [str((synth.images / file_name).resolve())],
        "relative": lambda: record["images"] == [f"images/{file_name}"],
    }[stored]
    assert value()
    assert (tmp_path / "p" / "images").is_dir() == (stored == "relative")
    assert to_llava_json(result.dataset, tmp_path / "l.json", synth.images) == len(result.dataset["val"])
    assert json.loads((tmp_path / "l.json").read_text())[0]["image"] == file_name


def test_coco_split_filter_must_match_a_file(synth, build_kind, tmp_path):
    with pytest.raises(ValueError, match="instances_<split>.json"):
        build_kind("coco", synth, tmp_path / "c", splits=["nosuchsplit"])


@pytest.mark.parametrize("kwargs", [{"method": "bilinear"}, {"grid": 0}, {"num_proc": 0}])
def test_config_is_checked_up_front(kwargs):
    with pytest.raises(ValueError):
        BuildConfig(**kwargs)


def test_expression_that_cannot_be_a_label_is_reported(corrupt_copy, build_kind, tmp_path):
    paths = corrupt_copy()
    refs = load_pickle(paths.refs)
    refs[0]["sentences"][0]["sent"] = "others"
    paths.refs.write_bytes(pickle.dumps(refs, protocol=2))
    result = build_kind("refcoco", paths, tmp_path / "out")
    reasons = {(i["id"], i["reason"]) for i in result.report["skipped"]}
    sent_id = refs[0]["sentences"][0]["sent_id"]
    assert (f"refcoco/{refs[0]['split']}/ref{refs[0]['ref_id']}/sent{sent_id}", "bad_label") in reasons


def test_fixed_target_label_replaces_the_expression(synth, built, build_kind, tmp_path):
    config = BuildConfig(progress=False, target_label="target")
    fixed = build_kind("refcoco", synth, tmp_path / "fixed", config=config).dataset["train"]
    plain = built["refcoco"].dataset["train"]
    assert len(fixed) == len(plain)
    for a, b in zip(fixed.select(range(10)), plain.select(range(10)), strict=True):
        assert a["labels"] == ["others", "target"] and b["labels"] == ["others", b["expression"]]
        grid_a = t4s.decode(a["messages"][-1]["content"][0]["text"], strict=True, labels=a["labels"]).grid
        grid_b = t4s.decode(b["messages"][-1]["content"][0]["text"], strict=True, labels=b["labels"]).grid
        assert np.array_equal(grid_a, grid_b)
        assert a["expression"] == b["expression"]
    with pytest.raises(ValueError, match="separator"):
        BuildConfig(target_label="a| b")


@pytest.mark.parametrize("enabled", [True, False])
def test_build_pauses_the_garbage_collector_and_puts_it_back(
    synth, build_kind, tmp_path, monkeypatch, enabled
):
    import gc

    from text4seg.data import arrow_files

    seen = []
    original = arrow_files.build_images
    monkeypatch.setattr(
        arrow_files, "build_images", lambda jobs: seen.append(gc.isenabled()) or original(jobs)
    )
    (gc.enable if enabled else gc.disable)()
    try:
        result = build_kind("refcoco", synth, tmp_path / "out", splits=["val"])
        assert gc.isenabled() == enabled
    finally:
        gc.enable()
    assert result.report["records_total"] > 0 and seen and not any(seen)
