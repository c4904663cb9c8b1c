"""`text4seg predict` end to end on a tiny saved model."""

from __future__ import annotations

import json
import time

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
    expected = descriptor.to_mask((36, 52), method="guided", image=Image.open(photo).convert("RGB"))
    assert np.array_equal(mask == 255, expected)  # guided upsampling: the default
    assert "repairs: none" in printed and "box:" in printed and f"wrote {out}" in printed
    facts = json.loads(summary.read_text())
    assert facts["labels"] == ["others", "the red circle"] and facts["constrained"] is True
    assert facts["upsample"] == "guided"


@pytest.mark.parametrize("method", ["guided", "bilinear", "nearest"])
def test_predict_upsample_picks_the_method(saved_model, photo, tmp_path, capsys, method):
    out, summary = tmp_path / "mask.png", tmp_path / "pred.json"
    argv = ["predict", str(saved_model), str(photo), "red circle", "--out", str(out), "--grid", "5"]
    argv += ["--device", "cpu", "--json", str(summary), "--upsample", method, "--background-bias", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    descriptor = t4s.decode(printed, t4s.TEXT4SEG.with_grid(5), strict=True, labels=["others", "red circle"])
    rgb = Image.open(photo).convert("RGB")
    assert np.array_equal(np.asarray(Image.open(out)) == 255, descriptor.to_mask((36, 52), method, image=rgb))
    assert json.loads(summary.read_text())["upsample"] == method


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


# -- hostile or mistaken input: one line on stderr, exit status 2, before the model loads -------------
@pytest.fixture()
def no_loading(monkeypatch):
    """Loading a model fails the test: each refusal below must come first."""

    def refuse(*_, **__):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("text4seg.infer.model_args.segmenter_from_args", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _refused(argv, capsys, match: str) -> str:
    started = time.perf_counter()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("text4seg") and err.count("\n") == 1, err
    assert match in err, err
    assert time.perf_counter() - started < 5
    return err


def test_predict_refuses_hostile_inputs_before_loading(saved_model, photo, tmp_path, capsys, no_loading):
    out = str(tmp_path / "m.png")
    model, image = str(saved_model), str(photo)
    _refused(
        ["predict", model, image, "x" * 2048, "--out", out], capsys, "2,048 characters long; the limit is 500"
    )
    _refused(["predict", model, image, "a, " + "b" * 600, "--classes", "--out", out], capsys, "limit is 500")
    many = ", ".join(f"class {k}" for k in range(300))
    _refused(["predict", model, image, many, "--classes", "--out", out], capsys, "300 classes do not fit")
    _refused(
        ["predict", model, image, "cat", "--out", str(tmp_path)],
        capsys,
        "--out " + str(tmp_path) + ": is a folder",
    )
    (tmp_path / "file").write_text("x")
    under_file = str(tmp_path / "file" / "m.png")
    _refused(["predict", model, image, "cat", "--out", under_file], capsys, "is a file, not a folder")
    _refused(["predict", model, image, "cat", "--out", out, "--json", str(tmp_path)], capsys, "--json")
    _refused(
        ["predict", "runs/x/final", image, "cat", "--out", out], capsys, "model runs/x/final: no such folder"
    )
    _refused(
        ["predict", "org/absent", image, "cat", "--out", out], capsys, "not in the local Hugging Face cache"
    )
    adapter = ["--adapter", str(tmp_path / "nope")]
    _refused(["predict", model, image, "cat", "--out", out, *adapter], capsys, "adapter")
    sam = ["--refine", "sam", "--sam", "runs/sam/missing"]
    _refused(
        ["predict", model, image, "cat", "--out", out, *sam], capsys, "SAM model runs/sam/missing: no such"
    )
    two = ["--refine", "tiny", "--sam", "facebook/sam-vit-base"]
    _refused(["predict", model, image, "cat", "--out", out, *two], capsys, "name two SAM models")


def test_predict_refuses_bad_settings_and_huge_images(saved_model, photo, tmp_path, capsys, no_loading):
    out = str(tmp_path / "m.png")
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "text4seg.json").write_text('{"grid": 10000}')
    _refused(
        ["predict", str(folder), str(photo), "cat", "--out", out],
        capsys,
        f"{folder / 'text4seg.json'}: grid must",
    )
    (folder / "text4seg.json").write_text("{not json")
    _refused(
        ["predict", str(folder), str(photo), "cat", "--out", out], capsys, "not a readable settings file"
    )
    huge = tmp_path / "huge.png"
    Image.new("1", (12000, 12000)).save(huge)  # a few KB on disk, 144 M pixels once decoded
    assert huge.stat().st_size < 100_000
    _refused(["predict", str(saved_model), str(huge), "cat", "--out", out], capsys, "is over the limit")


def test_arguments_that_are_not_utf8_are_refused(saved_model, photo, tmp_path, capsys):
    expression = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of a Latin-1 argv
    argv = ["predict", str(saved_model), str(photo), expression, "--out", str(tmp_path / "m.png")]
    _refused(argv, capsys, "argument 4 (b'caf\\xe9') is not valid UTF-8")


def test_predict_refine_takes_the_form_of_evaluate(saved_model, photo, tmp_path, capsys):
    new, old = tmp_path / "new.png", tmp_path / "old.png"
    common = [str(saved_model), str(photo), "cat", "--grid", "4", "--device", "cpu", "--min-iou", "0"]
    assert main(["predict", *common, "--out", str(new), "--refine", "sam", "--sam", "tiny"]) == 0
    assert main(["predict", *common, "--out", str(old), "--refine", "tiny"]) == 0  # the older spelling
    capsys.readouterr()
    assert np.array_equal(np.asarray(Image.open(new)), np.asarray(Image.open(old)))


def test_predict_from_a_lora_checkpoint_folder(tiny_vlm, photo, tmp_path, capsys):
    """`checkpoints/checkpoint-N/` of a LoRA run: the adapter, the processor, text4seg.json and the
    training state beside them; the adapter names its base folder, whose text4seg.json it overrides."""
    from peft import LoraConfig, get_peft_model

    model, processor = tiny_vlm
    base, checkpoint = tmp_path / "base", tmp_path / "run" / "checkpoints" / "checkpoint-40"
    model.save_pretrained(base)
    processor.save_pretrained(base)
    (base / "text4seg.json").write_text('{"grid": [7, 7], "target_label": "base"}')
    lora = get_peft_model(type(model).from_pretrained(base), LoraConfig(r=2, target_modules=["q_proj"]))
    lora.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    config = json.loads((checkpoint / "adapter_config.json").read_text())
    (checkpoint / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": str(base)})
    )
    (checkpoint / "text4seg.json").write_text('{"grid": [5, 5], "target_label": "target"}')
    (checkpoint / "optimizer.bin").write_bytes(b"\0" * 8)
    (checkpoint / "trainer_state.json").write_text('{"step": 40}')
    summary = tmp_path / "s.json"
    argv = [
        "predict",
        str(checkpoint),
        str(photo),
        "the cat",
        "--out",
        str(tmp_path / "m.png"),
        "--json",
        str(summary),
    ]
    assert main([*argv, "--device", "cpu"]) == 0
    capsys.readouterr()
    facts = json.loads(summary.read_text())
    assert facts["labels"] == ["others", "target"]  # the checkpoint's text4seg.json won over the base's
    assert t4s.decode(facts["text"], t4s.TEXT4SEG.with_grid(5), strict=True).grid.shape == (5, 5)


# -- how the model is asked and shown the image: --question-style, --visible ---------------------------
def test_model_argument_choices_are_the_packages():
    from text4seg.infer import model_args
    from text4seg.models.preprocess import VISIBLE_MODES
    from text4seg.protocol.templates import QUESTION_STYLES

    assert model_args.QUESTION_STYLES == QUESTION_STYLES
    assert model_args.VISIBLE_MODES == VISIBLE_MODES


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_question_style_and_visible_parse_alike_for_both_commands(command, capsys):
    from text4seg.cli import build_parser

    parser = build_parser()
    rest = ["IMAGE", "cat", "--out", "m.png"] if command == "predict" else ["--data", "DIR"]
    args = parser.parse_args([command, "MODEL", *rest, "--question-style", "text4seg", "--visible", "pad"])
    assert (args.question_style, args.visible) == ("text4seg", "pad")
    args = parser.parse_args([command, "MODEL", *rest])
    assert (args.question_style, args.visible) == (None, None)  # text4seg.json / the saved processor decide
    assert capsys.readouterr().err == ""
    for old, new in (("pipe", "text4seg"), ("list", "ours")):  # evaluate's older spellings
        assert parser.parse_args([command, "MODEL", *rest, "--question-style", old]).question_style == new
        warning = (
            f"text4seg {command}: warning: --question-style {old} is deprecated; say --question-style {new}"
        )
        assert capsys.readouterr().err == warning + "\n"
    for bad in (["--question-style", "plain"], ["--visible", "stretch"]):
        with pytest.raises(SystemExit):
            parser.parse_args([command, "MODEL", *rest, *bad])
        assert "invalid choice" in capsys.readouterr().err


def test_predict_question_style_wins_over_text4seg_json(tiny_vlm, photo, tmp_path, capsys):
    from text4seg.infer.segmenter import Segmenter
    from text4seg.protocol.templates import TEXT4SEG_REFER_QUESTION

    model, processor = tiny_vlm
    path = tmp_path / "model"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    (path / "text4seg.json").write_text('{"grid": [4, 4], "question": "Find {expression} here."}')
    argv = [
        "predict",
        str(path),
        str(photo),
        "white horse",
        "--out",
        str(tmp_path / "m.png"),
        "--device",
        "cpu",
    ]

    def asked(*flags: str, expression: str = "white horse") -> str:
        summary = tmp_path / "s.json"
        assert main([*argv[:3], expression, *argv[4:], "--json", str(summary), *flags]) == 0
        capsys.readouterr()
        return json.loads(summary.read_text())["question"]

    assert asked() == "Find white horse here."  # the saved question
    text4seg_wording = TEXT4SEG_REFER_QUESTION.format(expression="white horse")
    assert asked("--question-style", "text4seg") == text4seg_wording  # replaces the saved question
    assert asked("--question-style", "text4seg", "--classes", expression="cat, dog") == "cat | dog"
    (path / "text4seg.json").write_text('{"grid": [4, 4], "question_style": "text4seg"}')
    assert asked() == text4seg_wording
    ours = Segmenter(model, processor, constrained=False).query("white horse").question
    assert asked("--question-style", "ours") == ours != text4seg_wording


@pytest.fixture(scope="module")
def cropping_model(tmp_path_factory):
    """A tiny LLaVA whose processor was saved center-cropping (visible="crop"), as llava-hf's stock one."""
    import warnings

    from text4seg.models.tiny import build_tiny

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the crop warning, checked by the test below
        model, processor = build_tiny("llava", visible="crop")
    path = tmp_path_factory.mktemp("tiny_llava_crop")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_visible_overrides_the_saved_processor(cropping_model, photo, tmp_path, capsys):
    from text4seg.infer.segmenter import Segmenter
    from text4seg.models.preprocess import REFERENCE, hidden_share, visible_mode

    def loaded(visible):
        seg = Segmenter.from_pretrained(cropping_model, device="cpu", constrained=False, visible=visible)
        return visible_mode(seg.processor), bool(hidden_share(seg.processor, *REFERENCE))

    with pytest.warns(UserWarning, match="visible='crop'"):
        assert loaded(None) == ("crop", True)  # as saved
    assert loaded("squash") == ("squash", False)
    assert loaded("pad") == ("pad", False)
    argv = ["predict", str(cropping_model), str(photo), "cat", "--out", str(tmp_path / "m.png")]
    argv += ["--grid", "4", "--device", "cpu"]
    assert main([*argv, "--visible", "squash"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main([*argv, "--visible", "crop"]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and warnings[0].startswith("text4seg predict: warning: visible='crop': center")
    assert "image's width" in warnings[0] and "pixels it never sees" in warnings[0]
