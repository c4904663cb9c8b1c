"""`text4seg predict` end to end on a tiny saved model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import text4seg as t4s
from text4seg.cli import main


@pytest.fixture(scope="module")
def saved_model(tiny_vlm, tmp_path_factory):
    model, processor = tiny_vlm
    path = tmp_path_factory.mktemp("tiny_qwen2_vl")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "photo.jpg"
    Image.fromarray((np.random.default_rng(0).random((36, 52, 3)) * 255).astype(np.uint8)).save(path)
    return path


def test_predict_writes_mask_and_prints_descriptor(saved_model, photo, tmp_path, capsys):
    out, summary = tmp_path / "masks" / "mask.png", tmp_path / "pred.json"
    argv = [
        "predict",
        str(saved_model),
        str(photo),
        "the red circle",
        "--out",
        str(out),
        "--grid",
        "5",
        "--device",
        "cpu",
        "--json",
        str(summary),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    mask = np.asarray(Image.open(out))
    assert mask.shape == (36, 52) and set(np.unique(mask)) <= {0, 255}
    descriptor = t4s.decode(
        printed, t4s.TEXT4SEG.with_grid(5), strict=True, labels=["others", "the red circle"]
    )
    expected = descriptor.to_mask((36, 52))
    assert np.array_equal(mask == 255, expected)
    assert "repairs: none" in printed and "box:" in printed and f"wrote {out}" in printed
    facts = json.loads(summary.read_text())
    assert facts["labels"] == ["others", "the red circle"] and facts["constrained"] is True


def test_predict_classes_and_free_decoding(saved_model, photo, tmp_path, capsys):
    out = tmp_path / "labels.png"
    argv = [
        "predict",
        str(saved_model),
        str(photo),
        "cat, dog",
        "--classes",
        "--out",
        str(out),
        "--grid",
        "4",
    ]
    assert main(argv) == 0
    assert np.asarray(Image.open(out)).max() <= 2
    capsys.readouterr()
    argv = [
        "predict",
        str(saved_model),
        str(photo),
        "cat",
        "--out",
        str(out),
        "--grid",
        "4",
        "--no-constrained",
    ]
    assert main(argv) == 0  # a random model's free text is repaired, and the repairs are printed
    assert "repaired:" in capsys.readouterr().out


def test_predict_reports_bad_inputs(saved_model, photo, tmp_path, capsys):
    out = str(tmp_path / "m.png")
    assert main(["predict", str(saved_model), str(tmp_path / "missing.jpg"), "cat", "--out", out]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["predict", str(saved_model), str(photo), "  ", "--out", out]) == 2
    assert "expression is empty" in capsys.readouterr().err


def test_predict_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--help"])
    assert exit_info.value.code == 0
    assert "--no-constrained" in capsys.readouterr().out


def test_predict_uses_the_models_saved_settings_and_flags_win(tiny_vlm, photo, tmp_path, capsys):
    from text4seg.infer.segmenter import Segmenter

    model, processor = tiny_vlm
    path = tmp_path / "model"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    Segmenter(model, processor, grid=5, target_label="target", answer_sentences="none").save_settings(path)
    argv = ["predict", str(path), str(photo), "the red circle", "--out", str(tmp_path / "m.png")]
    assert main(argv + ["--device", "cpu", "--json", str(tmp_path / "a.json")]) == 0
    saved = json.loads((tmp_path / "a.json").read_text())
    fmt = t4s.TEXT4SEG.with_grid(5)
    assert saved["labels"] == ["others", "target"]
    assert t4s.decode(saved["text"], fmt, strict=True).grid.shape == (5, 5)  # grid 5 from text4seg.json
    flags = ["--target-label", "thing", "--background-bias", "1e4", "--json", str(tmp_path / "b.json")]
    assert main(argv + ["--device", "cpu", *flags]) == 0
    capsys.readouterr()
    override = json.loads((tmp_path / "b.json").read_text())
    assert override["labels"] == ["others", "thing"]
    assert (t4s.decode(override["text"], fmt).grid != 0).sum() > (
        t4s.decode(saved["text"], fmt).grid != 0
    ).sum()
