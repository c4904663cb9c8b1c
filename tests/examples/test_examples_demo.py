"""`text4seg demo` end to end on a tiny budget: every file is written and the saved model loads and predicts.

The quality bar (gIoU >= 0.4 in 10 minutes) is measured by `make demo` and bench/results/demo.md, not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from text4seg.cli import build_parser, main


def test_demo_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--help"])
    out = capsys.readouterr().out
    for option in ("--out", "--minutes", "--seed", "--num-images", "--no-constrained"):
        assert option in out


def test_demo_rejects_a_non_positive_budget(tmp_path):
    with pytest.raises(SystemExit, match="minutes"):
        main(["demo", "--out", str(tmp_path), "--minutes", "0"])


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo_out"
    argv = ["demo", "--out", str(out), "--minutes", "0.25", "--num-images", "16", "--eval-samples", "3"]
    assert main(argv + ["--quiet", "--threads", "1"]) == 0
    return out


def test_demo_writes_every_file(demo_out, capsys):
    report = json.loads((demo_out / "report.json").read_text())
    for key in ("gIoU", "cIoU", "baseline", "ceiling", "steps", "minutes", "config", "steps_per_second"):
        assert key in report, key
    assert 0.0 <= report["gIoU"] <= 1.0 and report["held_out"] == 3
    assert report["baseline"]["gIoU"] == 0.0  # every held-out expression has a target
    assert 0.3 < report["ceiling"]["gIoU"] <= 1.0
    assert report["steps"] >= 1 and report["minutes"] <= 0.25 + 0.5
    assert report["config"]["minutes"] == 0.25
    for picture in ("predictions.png", "loss.png"):
        with Image.open(demo_out / picture) as im:
            assert im.width > 100 and np.asarray(im.convert("L")).std() > 0
    model_dir = demo_out / "model"
    assert (model_dir / "config.json").is_file() and (model_dir / "tokenizer.json").is_file()
    assert (model_dir / "model.safetensors").is_file()


def test_saved_demo_model_predicts(demo_out):
    from text4seg.data import generate_sample
    from text4seg.infer import Segmenter

    segmenter = Segmenter.from_pretrained(demo_out / "model", device="cpu")
    sample = generate_sample(5, 128)
    result = segmenter.segment(Image.fromarray(sample.image), "the red circle")
    assert result.ok and result.mask.shape == (128, 128) and result.grid.shape == (16, 16)
    assert result.labels == ["others", "target"]  # restored from model/text4seg.json


def test_a_runs_split_loads_with_the_answers_it_trained_on(demo_out, tmp_path):
    from text4seg.demo import load_run_split, run_config

    assert run_config(demo_out).answer_prefix
    records = load_run_split(demo_out, "test")
    answer = records[0]["messages"][-1]["content"][0]["text"]
    head, block = answer.split("\n", 1)
    assert len(head.split()) == 2 and head.split()[0] in records[0]["expression"]
    assert block.startswith("<seg>")
    old = tmp_path / "old_run"
    old.mkdir()
    (old / "report.json").write_text(json.dumps({"config": {"minutes": 1.0}}))
    assert not run_config(old).answer_prefix and not run_config(old).answer_sentence


def test_fitted_tokenizer_keeps_rows_whole_and_words_apart(tmp_path):
    import text4seg as t4s
    from text4seg.demo import fit_tokenizer
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


@pytest.mark.parametrize("progress", [True, False])
def test_quiet_reaches_the_training_bar(progress, tmp_path):
    from text4seg.demo import DemoConfig, train_config

    assert train_config(DemoConfig(), tmp_path, progress=progress).loop.progress is progress


def test_time_budget_schedules_the_learning_rate_by_the_clock(tmp_path):
    from text4seg.demo import DemoConfig, train_config

    by_time = train_config(DemoConfig(), tmp_path).optim
    assert (by_time.scheduler, by_time.schedule_by) == ("cosine", "time")
    by_steps = train_config(DemoConfig(schedule_steps=500), tmp_path).optim
    assert (by_steps.scheduler, by_steps.schedule_by) == ("cosine", "steps")


def test_training_order_puts_the_curriculum_first_and_can_group_by_image():
    from datasets import Dataset

    from text4seg.demo import DemoConfig, training_order

    images = [1, 1, 1, 2, 3, 3, 4, 4, 4, 4]
    shapes = {1: 3, 2: 1, 3: 2, 4: 1}
    records = Dataset.from_dict(
        {
            "id": [f"r{i}" for i in range(len(images))],
            "source": [{"image_id": image} for image in images],
            "num_shapes": [shapes[image] for image in images],
        }
    )
    plain = training_order(records, DemoConfig(curriculum=3, color_stage=0))
    assert len(plain) == 3 + len(records)
    assert all(shapes[s["image_id"]] == 1 for s in plain["source"][:3])
    assert sorted(plain["id"][3:]) == sorted(records["id"])
    grouped = training_order(records, DemoConfig(curriculum=0, color_stage=0, group_by_image=True))
    order = [s["image_id"] for s in grouped["source"]]
    assert sorted(grouped["id"]) == sorted(records["id"])
    assert len([k for k in range(1, len(order)) if order[k] != order[k - 1]]) == 3  # four unbroken runs
    assert training_order(records, DemoConfig(curriculum=-1))["num_shapes"] == [1] * 5


def test_color_unique_reads_the_colours_of_an_images_other_expressions():
    from datasets import Dataset

    from text4seg.demo import color_unique

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


def test_training_order_puts_a_color_stage_after_the_single_shapes():
    from datasets import Dataset

    from text4seg.demo import DemoConfig, training_order

    records = Dataset.from_dict(
        {
            "id": [f"r{i}" for i in range(6)],
            "num_shapes": [1, 1, 2, 2, 3, 3],
            "color_unique": [True, True, True, False, True, False],
        }
    )
    order = training_order(records, DemoConfig(curriculum=4, color_stage=5))
    assert len(order) == 4 + 5 + len(records)
    assert set(order["id"][:4]) <= {"r0", "r1"}
    assert set(order["id"][4:9]) <= {"r2", "r4"}
    assert sorted(order["id"][9:]) == sorted(records["id"])


def test_answer_prefix_names_colour_and_kind_before_the_descriptor():
    from text4seg.demo import _drop_sentence, _prefix_answer

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

    assert _drop_sentence(record("the red circle"))["messages"][-1]["content"][0]["text"] == block
    answer = _prefix_answer(record("the small circle that is red"))["messages"][-1]["content"][0]["text"]
    assert answer == f"red circle\n{block}"
    with pytest.raises(ValueError, match="r0.*names no colour"):
        _prefix_answer(record("all shapes"))


def test_spread_sample_draws_across_the_split_in_order():
    from datasets import Dataset

    from text4seg.demo import spread_sample

    records = Dataset.from_dict({"id": list(range(100))})
    picked = spread_sample(records, 10, seed=0)["id"]
    assert len(set(picked)) == 10 and picked == sorted(picked) and picked[-1] > 50
    assert picked == spread_sample(records, 10, seed=0)["id"]
    assert len(spread_sample(records, 500, seed=0)) == 100
