"""Label-map datasets -> semantic records: the four real layouts, checks, ignore values and options."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support.labelmaps import H, W, label_values, write_preset

import text4seg as t4s
from text4seg.data.labelmap import (
    LabelMapError,
    LabelMapOptions,
    LabelMapSet,
    iter_records,
    read_classes,
    read_label_map,
)
from text4seg.data.spec import IssueLog
from text4seg.protocol.records import answer_text, ground_truth, question_text

# (preset, stored values in the two halves, the class names they mean, the value ignored in the border)
LAYOUTS = [
    ("cocostuff", [0, 156], ["person", "sky-other"], 255),
    ("ade20k", [1, 3], ["wall", "sky"], 0),
    ("pascal-context", [37, 47], ["person", "sky"], 0),
    ("voc", [12, 15], ["dog", "person"], 255),
]
OPT = LabelMapOptions(grid=8)


def _records(data, options=OPT):
    log = IssueLog()
    return list(iter_records(data, options, log)), log


@pytest.mark.parametrize("name, values, names, ignore", LAYOUTS)
def test_each_real_layout_gives_records_with_the_class_names(tmp_path, name, values, names, ignore):
    maps = {f"img{k}": label_values(k, values, ignore) for k in range(3)}
    data = write_preset(name, tmp_path, "val", maps)
    records, log = _records(data)
    assert not log.items and len(records) == 3
    record = records[0]
    assert record["labels"] == ["others", *names] and record["task"] == "semantic"
    truth = ground_truth(record)
    assert truth.ignore is not None and truth.ignore[:2].all() and not truth.ignore[2:].any()
    assert truth.masks[0][2:, : W // 2].all() and not truth.masks[0][:2].any()
    decoded = t4s.decode(t4s.extract_segments(answer_text(record))[0], fmt=OPT.fmt, strict=True)
    assert decoded.labels == record["labels"] and decoded.grid.shape == (8, 8)
    assert set(np.unique(decoded.grid)) == {0, 1, 2}


def test_a_palette_png_is_read_by_index_not_colour(tmp_path):
    values = label_values(0, [15, 12], 255)
    image = Image.frombytes("P", (W, H), values.tobytes())
    image.putpalette([255 - (i % 256) for i in range(768)])
    image.save(tmp_path / "p.png")
    assert np.array_equal(read_label_map(tmp_path / "p.png"), values)


def test_bad_label_maps_are_skipped_naming_file_and_reason(tmp_path):
    data = write_preset(
        "ade20k", tmp_path, "val", {"good": label_values(0, [1, 3]), "odd": label_values(0, [1, 200])}
    )
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(data.labels / "small.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(data.images / "small.jpg")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(data.labels / "rgb.png")
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(data.images / "rgb.jpg")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(data.labels / "lonely.png")
    records, log = _records(data)
    assert [r["id"] for r in records] == ["ade20k/val/good"]
    reasons = {issue.id: (issue.reason, issue.detail) for issue in log.items}
    assert (
        reasons["odd"][0] == "bad_label_map"
        and "[200]" in reasons["odd"][1]
        and "odd.png" in reasons["odd"][1]
    )
    assert "label map is 32×25, image is 32×24" in reasons["small"][1]
    assert "RGB image, not a label map" in reasons["rgb"][1]
    assert reasons["lonely"][0] == "missing_image"


def test_an_image_whose_pixels_are_all_ignored_is_skipped(tmp_path):
    data = write_preset("voc", tmp_path, "val", {"void": np.full((H, W), 255, np.uint8)})
    records, log = _records(data)
    assert not records and "every pixel is ignored" in log.items[0].detail


def test_class_file_lines_name_values_and_blank_lines_are_unused(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("\ncat\n\ndog\n")
    assert read_classes(path) == (None, "cat", None, "dog")
    path.write_text("cat\ncat\n")
    with pytest.raises(LabelMapError, match="repeated"):
        read_classes(path)


def _set(tmp_path, classes=(None, "cat", "dog", "bird", "fish")) -> LabelMapSet:
    data = write_preset("ade20k", tmp_path, "val", {"a": label_values(1, [1, 2], 0)})
    return LabelMapSet("toy", "val", data.images, data.labels, classes, ignore=(0,))


def test_distractors_are_asked_and_come_out_as_background(tmp_path):
    records, _ = _records(_set(tmp_path), LabelMapOptions(grid=8, distractors=2, seed=3))
    record = records[0]
    assert sorted(record["labels"][1:]) == ["bird", "cat", "dog", "fish"]
    truth = ground_truth(record)
    empty = [name for name, m in zip(truth.label_names, truth.masks, strict=True) if not m.any()]
    assert sorted(empty) == ["bird", "fish"]
    assert "not appear" in answer_text(record) or "There is no" in answer_text(record)


def test_max_classes_synonyms_pipe_questions_and_seeded_crops(tmp_path):
    data = _set(tmp_path)
    options = LabelMapOptions(
        grid=8,
        max_classes=1,
        synonyms={"cat": ("kitty",), "dog": ("puppy",)},
        question_style="pipe",
        crop=0.5,
        seed=1,
    )
    first, _ = _records(data, options)
    again, _ = _records(data, options)
    record = first[0]
    assert record == again[0]  # every choice comes from the seed
    assert len(record["labels"]) == 2 and record["labels"][1] in ("cat", "kitty", "dog", "puppy")
    assert question_text(record) == record["labels"][1]
    assert record["width"] <= W and record["height"] <= H and record["images"][0]["bytes"]
    assert ground_truth(record).mask.shape == (record["height"], record["width"])
    options = LabelMapOptions(grid=8, question_style="pipe")
    assert question_text(_records(data, options)[0][0]) == "cat | dog"


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="crop"):
        LabelMapOptions(crop=2.0)
    with pytest.raises(ValueError, match="question_style"):
        LabelMapOptions(question_style="csv")


@pytest.mark.parametrize("name", ["ade20k", "voc"])
def test_the_build_command_writes_records_and_a_report_per_split(tmp_path, name, capsys):
    from text4seg.cli import main
    from text4seg.protocol.records import load_records

    values = {"ade20k": [1, 3], "voc": [12, 15]}[name]
    for split in ("train", "val"):
        write_preset(
            name, tmp_path / "root", split, {f"{split}{k}": label_values(k, values, 0) for k in range(2)}
        )
    out = tmp_path / "out"
    assert (
        main(["build", name, "--root", str(tmp_path / "root"), "--out", str(out), "--grid", "8", "--quiet"])
        == 0
    )
    data = load_records(out)
    assert {split: len(data[split]) for split in data} == {"train": 2, "val": 2}
    report = (out / "build_report.json").read_text()
    assert '"records_total": 4' in report
    assert "4 semantic records" in capsys.readouterr().out
    truth = ground_truth(data["val"][0])
    assert truth.ignore is not None and truth.ignore[:2].all()


def test_the_generic_command_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    from text4seg.cli import main

    (tmp_path / "classes.txt").write_text("\ncat\n")
    args = [
        "build",
        "labelmap",
        "--images",
        str(tmp_path / "none"),
        "--labels",
        str(tmp_path),
        "--classes",
        str(tmp_path / "classes.txt"),
        "--out",
        str(tmp_path / "out"),
    ]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "none: not a folder" in err and "Traceback" not in err


# -- where the images go: the stores of the other builds, the same default ------------------------------
def _build(tmp_path, options=OPT, **kwargs):
    from text4seg.data.labelmap import build_labelmaps

    maps = {f"img{k}": label_values(k, [1, 3], 0) for k in range(2)}
    data = write_preset("ade20k", tmp_path / "raw", "val", maps)
    return build_labelmaps([data], options, tmp_path / "out", progress=False, **kwargs), data


def test_by_default_each_image_is_stored_once_in_the_build_like_the_other_builds(tmp_path):
    import shutil

    from text4seg.data import BuildConfig
    from text4seg.protocol.images import read_record_image
    from text4seg.protocol.records import load_records

    report, data = _build(tmp_path)
    assert report["config"]["image_store"] == BuildConfig().image_store == "folder"
    assert report["images_stored"] == 2 and sorted(p.name for p in (tmp_path / "out/images").iterdir()) == [
        "img0.jpg",
        "img1.jpg",
    ]
    shutil.move(tmp_path / "out", tmp_path / "moved")
    shutil.rmtree(tmp_path / "raw")
    record = load_records(tmp_path / "moved")["val"][1]
    assert record["images"][0] == str(tmp_path / "moved/images/img1.jpg")
    image = read_record_image(record["images"][0], record["id"])
    assert (image.width, image.height) == (W, H)


def test_crops_are_stored_as_new_images_and_cannot_be_mere_paths(tmp_path):
    from text4seg.protocol.records import load_records

    options = LabelMapOptions(grid=8, crop=0.5, seed=2)
    report, _ = _build(tmp_path, options)
    assert report["images_stored"] == 2
    record = load_records(tmp_path / "out")["val"][0]
    assert record["images"][0] == str(tmp_path / "out/images/crops/0/img0.png")
    with Image.open(record["images"][0]) as image:
        assert image.size == (record["width"], record["height"])
    with pytest.raises(ValueError, match="no file to point to"):
        _build(tmp_path / "paths", options, image_store="paths")


@pytest.mark.parametrize("store", ["embed", "paths"])
def test_the_other_stores_embed_the_bytes_or_point_to_the_sources(tmp_path, store):
    import datasets

    report, data = _build(tmp_path, image_store=store)
    assert report["config"]["image_store"] == store and not (tmp_path / "out/images").exists()
    image = datasets.load_from_disk(str(tmp_path / "out"))["val"][0]["images"][0]
    if store == "paths":
        assert image == str((data.images / "img0.jpg").resolve())
    else:
        assert isinstance(image, Image.Image) and image.size == (W, H)


def test_the_build_command_takes_the_image_store_flags(tmp_path, capsys):
    from text4seg.cli import main

    write_preset("voc", tmp_path / "root", "val", {"a": label_values(0, [12, 15], 0)})
    argv = ["build", "voc", "--root", str(tmp_path / "root"), "--splits", "val", "--grid", "8", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "copied"), "--copy-images"]) == 0
    copied = tmp_path / "copied/images/a.jpg"
    assert copied.is_file() and copied.stat().st_nlink == 1
    assert main([*argv, "--out", str(tmp_path / "paths"), "--image-store", "paths", "--crop", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no file to point to" in err and "Traceback" not in err


def test_two_sets_naming_different_images_alike_are_refused_not_mixed_up(tmp_path):
    from text4seg.data.labelmap import build_labelmaps

    first = write_preset("ade20k", tmp_path / "one", "val", {"same": label_values(0, [1, 3], 0)})
    second = write_preset("ade20k", tmp_path / "two", "train", {"same": label_values(1, [1, 4], 0)})
    with pytest.raises(LabelMapError, match="images/same.jpg would hold both .*one.* and .*two"):
        build_labelmaps([first, second], OPT, tmp_path / "out", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # no build, no leftover crops folder
