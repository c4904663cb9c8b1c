"""The demo example (examples/demo) end to end on a tiny budget, its command line and its parts.

The quality bar (gIoU >= 0.4 in 10 minutes) is measured by `make demo` and bench/results/demo.md, not here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from text4seg.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--minutes", "0.2", "--num-images", "16", "--eval-samples", "3", "--threads", "1", "--quiet",
    "--set", "demo.curriculum=4", "--set", "demo.color_stage=4", "--set", "demo.calibration_samples=4",
]  # fmt: skip


def test_demo_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    out = capsys.readouterr().out
    for option in ("--out", "--minutes", "--seed", "--num-images", "--no-constrained", "--set"):
        assert option in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--minutes", "0"], "--minutes must be > 0"),
        (["--set", "demo.colour_stage=3"], "demo.yaml.*unknown key.*colour_stage"),
        (["--set", "optim.lr=fast"], "optim.lr: expected a number"),
        (["--set", "demo.processes=0"], "demo.processes must be >= 1"),
    ],
)
def test_demo_rejects_bad_options_with_one_error_line(argv, message, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_demo_without_the_example_says_to_use_a_checkout(tmp_path, monkeypatch, capsys):
    from text4seg import demo_cli

    monkeypatch.setattr(demo_cli, "EXAMPLES", tmp_path)
    assert demo_cli.demo_module(tmp_path) is None
    assert main(["demo", "--out", str(tmp_path / "out")]) == 2
    assert "source checkout" in capsys.readouterr().err


def test_make_demo_command_line_resolves():
    from demo.run import overrides_of
    from demo.settings import load

    from text4seg import demo_cli

    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, re.M).group(1)
    command = recipe.replace("$(DEMO_ARGS)", "--minutes 3").split()
    assert command[0] == "$(VENV)/bin/text4seg" and "text4seg = " in (REPO / "pyproject.toml").read_text()
    args = build_parser().parse_args(command[1:])
    assert args.func is demo_cli.run and args.out == Path("demo_out")
    config, demo = load(overrides_of(args))
    assert config.loop.max_minutes == 3.0 and demo.num_images == 6000


def test_recipe_is_a_train_recipe_and_demo_yaml_holds_the_rest():
    import yaml
    from demo.settings import DEMO_SETTINGS, RECIPE, load

    from text4seg.train.config import load_config

    config = load_config(RECIPE)  # the same typed TrainConfig as `text4seg train`
    assert (config.optim.scheduler, config.optim.schedule_by) == ("cosine", "time")
    assert config.data.shuffle is False and config.finetune.method == "full"
    assert config.model.tiny["vision_config"] == {"spatial_merge_size": 2}
    config, demo = load(["optim.lr=6e-3", "demo.num_images=7", "demo.target_label=null"])
    assert config.optim.lr == 6e-3 and demo.num_images == 7 and demo.target_label is None
    recipe, own = (yaml.safe_load(path.read_text()) for path in (RECIPE, DEMO_SETTINGS))
    assert set(recipe) == {"model", "data", "finetune", "optim", "loop", "output"} and "num_images" in own


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_demo_trains_under_accelerate_launch_on_two_processes(tmp_path):
    out = tmp_path / "out"
    argv = ["demo", "--out", str(out), *TINY, "--minutes", "5", "--set", "demo.processes=2"]
    assert main([*argv, "--set", "loop.max_steps=2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 2 and report["stopped"] == "max_steps"
    import yaml

    recipe = yaml.safe_load((out / "run.yaml").read_text())
    assert recipe["loop"]["batch_size"] == 4  # the global batch of 8 split over the 2 processes
    assert (out / "model" / "text4seg.json").is_file() and not (out / "init").exists()


def test_demo_writes_every_file(demo_out):
    report = json.loads((demo_out / "report.json").read_text())
    for key in ("gIoU", "cIoU", "baseline", "ceiling", "steps", "minutes", "config", "steps_per_second"):
        assert key in report, key
    assert 0.0 <= report["gIoU"] <= 1.0 and report["held_out"] == 3
    assert report["baseline"]["gIoU"] == 0.0  # every held-out expression has a target
    assert 0.3 < report["ceiling"]["gIoU"] <= 1.0
    assert report["steps"] >= 1 and report["minutes"] <= 0.2 + 0.5
    assert report["config"]["train"]["loop"]["max_minutes"] == 0.2
    assert report["config"]["demo"]["num_images"] == 16
    for picture in ("predictions.png", "loss.png"):
        with Image.open(demo_out / picture) as im:
            assert im.width > 100 and np.asarray(im.convert("L")).std() > 0


def test_one_run_writes_one_model_with_the_settings_it_trained_on(demo_out):
    from text4seg.protocol.asking import Asking

    weights = sorted(p.parent.relative_to(demo_out) for p in demo_out.rglob("*.safetensors"))
    assert weights == [Path("model")]
    settings = sorted(p.parent.relative_to(demo_out) for p in demo_out.rglob("text4seg.json"))
    assert settings == [Path("data/records"), Path("model")]
    trained_on, model = Asking.load(demo_out / "data/records"), Asking.load(demo_out / "model")
    assert trained_on.answer_sentences == "free" and trained_on.target_label == "target"
    assert trained_on.grid == (16, 16) and trained_on.background_bias is None
    report = json.loads((demo_out / "report.json").read_text())
    assert model.to_dict() == {**trained_on.to_dict(), "background_bias": report["background_bias"]}


def test_the_saved_records_are_what_training_reads(demo_out):
    import datasets
    from demo.prepare import load_records
    from demo.settings import load

    from text4seg.train.data import load_datasets

    config, _ = load()
    config.data.path = str(demo_out / "data/records")
    trained, _ = load_datasets(config)
    saved = load_records(demo_out, "train")
    assert trained["id"] == saved["id"] and trained["messages"] == saved["messages"]
    assert len(saved) == 4 + 4 + len(set(saved["id"]))  # curriculum, colour stage, then every record once
    assert saved.features == datasets.load_from_disk(config.data.path)["train"].features
    for record in saved.select(range(5)):
        head, block = record["messages"][-1]["content"][0]["text"].split("\n", 1)
        assert len(head.split()) == 2 and set(head.split()) <= set(record["expression"].split())
        assert block.startswith("<seg>")


def test_saved_demo_model_predicts(demo_out):
    from text4seg.data import generate_sample
    from text4seg.infer import Segmenter

    segmenter = Segmenter.from_pretrained(demo_out / "model", device="cpu")
    assert segmenter.answer_sentences == "free"  # restored from model/text4seg.json
    # the saved processor cuts images as the saved vision tower merges them (recipe.yaml: 2x2)
    assert segmenter.processor.image_processor.merge_size == 2
    assert segmenter.model.config.vision_config.spatial_merge_size == 2
    sample = generate_sample(5, 128)
    result = segmenter.segment(Image.fromarray(sample.image), "the red circle")
    assert result.ok and result.mask.shape == (128, 128) and result.grid.shape == (16, 16)
    assert result.labels == ["others", "target"]


def test_fitted_tokenizer_keeps_rows_whole_and_words_apart(tmp_path):
    from demo.model import fit_tokenizer

    import text4seg as t4s
    from text4seg.models.tiny import build_tiny

    _, processor = build_tiny("qwen3_vl", image_size=32, patch_size=8)
    grid = np.zeros((16, 16), dtype=np.int64)
    grid[5:9, 3:7] = 1
    answer = "<seg>" + t4s.grid_to_text(grid, ["others", "target"]) + "</seg>"
    texts = [answer, "Where is the purple hexagon?", "Please segment the red circle."] * 50
    tok = fit_tokenizer(processor, texts, 600, tmp_path, whole_rows=True).tokenizer
    pieces = [tok.decode([i]) for i in tok(answer, add_special_tokens=False)["input_ids"]]
    assert pieces[0] == "<seg>" and pieces[-1] == "</seg>" and len(pieces) == 18
    assert pieces[6] == "others *3| target *4| others *9\n "
    words = [tok.decode([i]) for i in tok("Where is the purple hexagon?")["input_ids"]]
    assert " purple" in words and " hexagon" in words
    runs = fit_tokenizer(processor, texts, 600, tmp_path / "runs", whole_rows=False).tokenizer
    assert [runs.decode([i]) for i in runs(answer)["input_ids"]][6:9] == [
        "others *3| ",
        "target *4| ",
        "others *9\n ",
    ]


def _settings(**values):
    from demo.settings import demo_settings

    return demo_settings(values)


def test_training_order_puts_the_curriculum_first_and_can_group_by_image():
    from datasets import Dataset
    from demo.prepare import training_order

    images = [1, 1, 1, 2, 3, 3, 4, 4, 4, 4]
    shapes = {1: 3, 2: 1, 3: 2, 4: 1}
    records = Dataset.from_dict(
        {
            "id": [f"r{i}" for i in range(len(images))],
            "source": [{"image_id": image} for image in images],
            "num_shapes": [shapes[image] for image in images],
        }
    )
    plain = training_order(records, _settings(curriculum=3, color_stage=0), seed=0)
    assert len(plain) == 3 + len(records)
    assert all(shapes[s["image_id"]] == 1 for s in plain["source"][:3])
    assert sorted(plain["id"][3:]) == sorted(records["id"])
    grouped = training_order(records, _settings(curriculum=0, color_stage=0, group_by_image=True), seed=0)
    order = [s["image_id"] for s in grouped["source"]]
    assert sorted(grouped["id"]) == sorted(records["id"])
    assert len([k for k in range(1, len(order)) if order[k] != order[k - 1]]) == 3  # four unbroken runs
    assert training_order(records, _settings(curriculum=-1), seed=0)["num_shapes"] == [1] * 5


def test_training_order_puts_a_color_stage_after_the_single_shapes():
    from datasets import Dataset
    from demo.prepare import training_order

    records = Dataset.from_dict(
        {
            "id": [f"r{i}" for i in range(6)],
            "num_shapes": [1, 1, 2, 2, 3, 3],
            "color_unique": [True, True, True, False, True, False],
        }
    )
    order = training_order(records, _settings(curriculum=4, color_stage=5), seed=0)
    assert len(order) == 4 + 5 + len(records)
    assert set(order["id"][:4]) <= {"r0", "r1"}
    assert set(order["id"][4:9]) <= {"r2", "r4"}
    assert sorted(order["id"][9:]) == sorted(records["id"])


def test_color_unique_reads_the_colours_of_an_images_other_expressions():
    from datasets import Dataset
    from demo.prepare import color_unique

    records = Dataset.from_dict(
        {
            "source": [
                {"image_id": 1, "ann_ids": [1]},
                {"image_id": 1, "ann_ids": [1]},  # a second sentence for the same shape
                {"image_id": 1, "ann_ids": [2]},
                {"image_id": 1, "ann_ids": [3]},
                {"image_id": 2, "ann_ids": [4]},
                {"image_id": 3, "ann_ids": [5]},
            ],
            "expression": [
                "the red circle",
                "circle that is red",
                "the blue circle",
                "the small blue square",
                "the green star",
                "the shape",
            ],
        }
    )
    assert color_unique(records) == [True, True, False, False, True, False]


def test_answer_prefix_names_colour_and_kind_before_the_descriptor():
    from demo.prepare import drop_sentence, prefix_answer

    block = "<seg>others *16\n others *16</seg>"

    def record(expression):
        return {
            "id": "r0",
            "expression": expression,
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": f"Where is {expression}?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": f"Sure, it is here.\n{block}"}]},
            ],
        }

    assert drop_sentence(record("the red circle"))["messages"][-1]["content"][0]["text"] == block
    answer = prefix_answer(record("the small circle that is red"))["messages"][-1]["content"][0]["text"]
    assert answer == f"red circle\n{block}"
    with pytest.raises(ValueError, match="r0.*names no colour"):
        prefix_answer(record("all shapes"))


def test_spread_sample_draws_across_the_split_in_order():
    from datasets import Dataset
    from demo.run import spread_sample

    records = Dataset.from_dict({"id": list(range(100))})
    picked = spread_sample(records, 10, seed=0)["id"]
    assert len(set(picked)) == 10 and picked == sorted(picked) and picked[-1] > 50
    assert picked == spread_sample(records, 10, seed=0)["id"]
    assert len(spread_sample(records, 500, seed=0)) == 100


@pytest.mark.parametrize(
    "minutes, steps, words",
    [
        (10.0, 100000, "at most 10 min or 100000 steps"),
        (None, 2000, "at most 2000 steps"),
        (None, None, "1 epochs"),
    ],
)
def test_the_training_budget_is_said_in_minutes_steps_or_epochs(minutes, steps, words):
    from demo.run import _budget

    from text4seg.train.config import LoopConfig

    assert _budget(LoopConfig(max_minutes=minutes, max_steps=steps)) == words
