"""`text4seg build ...` end to end through the top-level command line."""

from __future__ import annotations

import json

import pytest
from datasets import load_from_disk

from text4seg.cli import main

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def test_build_synthetic_writes_files_and_three_record_sets(tmp_path, capsys):
    out = tmp_path / "synth"
    code = main(
        ["build", "synthetic", "--out", str(out), "--num-images", "12", "--image-size", "96", "72", "--quiet"]
    )
    assert code == 0
    assert (out / "source" / "refs(unc).p").is_file() and (out / "source" / "grefs(unc).json").is_file()
    for kind in ("coco", "refcoco", "grefcoco"):
        dataset = load_from_disk(str(out / kind))
        assert sum(len(split) for split in dataset.values()) > 0
        report = json.loads((out / kind / "build_report.json").read_text())
        assert report["skipped_total"] == 0 and report["config"]["image_store"] == "folder"
        assert len(list((out / kind / "images").iterdir())) == report["images_stored"] > 0  # once each
    assert "grefcoco:" in capsys.readouterr().out
    stamp = (out / "source" / "instances.json").stat().st_mtime_ns
    assert (
        main(
            [
                "build",
                "synthetic",
                "--out",
                str(out),
                "--num-images",
                "12",
                "--image-size",
                "96",
                "72",
                "--quiet",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.count("[reused]") == 3
    assert (out / "source" / "instances.json").stat().st_mtime_ns == stamp


def test_build_refcoco_with_options_then_cache(synth, tmp_path, capsys):
    args = [
        "build",
        "refcoco",
        "--ann",
        str(synth.refs),
        "--images",
        str(synth.images),
        "--out",
        str(tmp_path / "r"),
    ]
    args += ["--grid", "24", "--method", "area", "--splits", "val", "--num-proc", "1", "--quiet"]
    args += ["--llava", str(tmp_path / "llava.json"), "--name", "refcoco+", "--target-label", "target"]
    assert main(args) == 0
    dataset = load_from_disk(str(tmp_path / "r"))
    assert list(dataset) == ["val"] and dataset["val"][0]["grid"] == [24, 24]
    assert {tuple(labels) for labels in dataset["val"]["labels"]} == {("others", "target")}
    assert dataset["val"][0]["id"].startswith("refcoco+/val/")
    assert len(json.loads((tmp_path / "llava.json").read_text())) == len(dataset["val"])
    assert main(args) == 0
    assert "[reused]" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("flags", "store", "linked"),
    [
        ([], "folder", True),
        (["--copy-images"], "folder", False),
        (["--image-store", "embed"], "embed", None),
        (["--image-paths"], "paths", None),
        (["--image-store", "paths"], "paths", None),
    ],
)
def test_images_are_stored_once_by_default_or_as_asked(flags, store, linked, synth, tmp_path):
    out = tmp_path / "r"
    args = ["build", "refcoco", "--ann", str(synth.refs), "--images", str(synth.images), "--splits", "val"]
    assert main([*args, "--out", str(out), "--quiet", *flags]) == 0
    report = json.loads((out / "build_report.json").read_text())
    assert report["config"]["image_store"] == store
    assert (out / "images").is_dir() == (store == "folder")
    if linked is not None:
        assert (report["images_linked"] > 0) == linked and report["images_linked"] + report[
            "images_copied"
        ] == report["images_stored"]
    first = load_from_disk(str(out))["val"].features["images"].feature
    assert (getattr(first, "dtype", None) == "string") == (store != "embed")


def test_strict_failure_is_an_error_exit(corrupt_copy, tmp_path, capsys):
    paths = corrupt_copy()
    data = json.loads(paths.instances.read_text())
    data["annotations"][0]["category_id"] = 777
    paths.instances.write_text(json.dumps(data))
    args = ["build", "grefcoco", "--ann", str(paths.grefs), "--images", str(paths.images)]
    args += ["--out", str(tmp_path / "g"), "--strict", "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert (
        "instances.json" in err and f"ann{data['annotations'][0]['id']}" in err and "missing_category" in err
    )


def test_help_lists_every_kind(capsys):
    with pytest.raises(SystemExit):
        main(["build", "--help"])
    text = capsys.readouterr().out
    assert all(kind in text for kind in ("coco", "refcoco", "grefcoco", "synthetic"))


def _deep_json(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda data: data.update(categories=5), "'categories' must be a list"),
        (lambda data: data.update(annotations=None), "'annotations' must be a list"),
        (lambda data: data.update(images={"id": 1}), "no 'images' list"),
        (None, "nested too deeply"),
    ],
    ids=["categories-int", "annotations-null", "images-dict", "json-100k-deep"],
)
def test_odd_fields_end_in_one_error_line(corrupt_copy, tmp_path, capsys, damage, words):
    paths = corrupt_copy()
    if damage is None:
        paths.instances.write_text(_deep_json(100_000))
    else:
        data = json.loads(paths.instances.read_text())
        damage(data)
        paths.instances.write_text(json.dumps(data))
    args = ["build", "refcoco", "--ann", str(paths.refs), "--images", str(paths.images)]
    assert main([*args, "--out", str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert "instances.json" in lines[0] and words in lines[0]


def test_null_box_values_are_ignored_not_fatal(corrupt_copy, tmp_path, capsys):
    paths = corrupt_copy()
    data = json.loads(paths.instances.read_text())
    for ann in data["annotations"]:
        ann["bbox"] = [None, None, None, None]
    paths.instances.write_text(json.dumps(data))
    args = ["build", "refcoco", "--ann", str(paths.refs), "--images", str(paths.images)]
    assert main([*args, "--out", str(tmp_path / "r"), "--quiet"]) == 0
    assert "refcoco:" in capsys.readouterr().out


def test_hostile_pickle_is_one_error_line(corrupt_copy, tmp_path, capsys):
    import pickle

    paths = corrupt_copy()
    x: list = []
    for _ in range(40):
        x = [x, x]
    paths.refs.write_bytes(pickle.dumps(x, protocol=2))
    args = ["build", "refcoco", "--ann", str(paths.refs), "--images", str(paths.images)]
    assert main([*args, "--out", str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "refs(unc).p" in err and "expands" in err and "\n" not in err
