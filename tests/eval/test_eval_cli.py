"""`text4seg evaluate` end to end on a tiny random model, in one process and in two (accelerate, gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import text4seg as t4s
from text4seg.cli import main

ARGS = [
    "--split",
    "val",
    "--limit",
    "5",
    "--batch-size",
    "1",
    "--refine",
    "sam",
    "--sam",
    "tiny",
    "--min-iou",
    "0",
]


def _args(saved: Path, out: Path) -> list[str]:
    return [str(saved / "model"), "--data", str(saved / "data"), *ARGS, "--out", str(out), "--quiet"]


def test_evaluate_command_writes_report_lines_and_overlays(saved, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["evaluate", *_args(saved, out), "--overlays", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["n_samples"] == 5 and report["info"]["processes"] == 1
    assert report["info"]["repaired_outputs"] == 0  # constrained decoding: every answer parses strictly
    assert report["info"]["refine"] == "sam" and report["info"]["visible"] is None  # as asked (ARGS)
    group = report["metrics"]["refer"]["grefcoco"]
    assert set(group) == {"coarse", "guided", "refined"} and group["coarse"]["n"] == 5
    assert group["guided"]["n"] == 5
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and all("refine" in line and "iou" in line["guided"] for line in lines)
    assert len(list((out / "overlays").glob("*.png"))) == 2
    assert "| group | metric | coarse | guided | refined |" in capsys.readouterr().out


def test_evaluate_command_reports_a_missing_split(saved, tmp_path, capsys):
    assert main(["evaluate", str(saved / "model"), "--data", str(saved / "data"), "--split", "test"]) == 2
    assert "split 'test' not in the dataset" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _evaluate_in_two_processes(args: list[str]) -> None:
    """`text4seg evaluate ARGS` under `accelerate launch` with 2 CPU processes (gloo); fails on a non-zero exit."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher += ["--main_process_port", str(_free_port())]
    script = Path(__file__).with_name("_launch_evaluate.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(
        [*launcher, str(script), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one(saved, tmp_path):
    single = tmp_path / "single"
    assert main(["evaluate", *_args(saved, single)]) == 0
    double = tmp_path / "double"
    _evaluate_in_two_processes(_args(saved, double))
    one = json.loads((single / "report.json").read_text())
    two = json.loads((double / "report.json").read_text())
    assert two["info"]["processes"] == 2
    assert two["metrics"] == one["metrics"]
    assert (double / "samples.jsonl").read_text().count("\n") == 5


# -- hostile or mistaken input: refused in one line, before the run ------------------------------------
@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--limit", "-3", "must be at least 1"),
        ("--batch-size", "0", "must be at least 1"),
        ("--overlays", "-1", "must be 0 or more"),
        ("--min-iou", "2", "must be in 0..1"),
        ("--grid", "10000", "must be in 1..1024"),
        ("--background-bias", "nan", "must be a finite number"),
    ],
)
def test_bad_numbers_are_refused_while_parsing(saved, flag, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(saved / "model"), "--data", str(saved / "data"), flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}: {message}" in capsys.readouterr().err


def _refused(argv, capsys, match: str) -> None:
    assert main(argv) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after any progress bars of loading
    assert last.startswith("text4seg evaluate: ") and match in last, last


def test_bad_paths_and_settings_are_refused_before_the_run(saved, tmp_path, capsys, monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("evaluation started before the input was checked")

    monkeypatch.setattr("text4seg.eval.evaluate.evaluate", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = ["--data", str(saved / "data")]
    (tmp_path / "report").write_text("not a folder")
    out = ["--out", str(tmp_path / "report")]
    _refused(["evaluate", str(saved / "model"), *data, *out], capsys, "is a file, not a folder")
    _refused(["evaluate", "runs/x/final", *data], capsys, "model runs/x/final: no such folder")
    _refused(["evaluate", "Qwen/absent-model", *data], capsys, "not in the local Hugging Face cache")
    _refused(
        ["evaluate", str(saved / "model"), *data, "--refine", "sam", "--sam", "./nope"], capsys, "SAM model"
    )
    bad = tmp_path / "bad_settings"
    bad.mkdir()
    (bad / "text4seg.json").write_text('{"grid": [10000, 10000]}')
    _refused(["evaluate", str(bad), *data], capsys, f"{bad / 'text4seg.json'}: grid must")


def test_a_record_claiming_a_huge_size_is_one_line(saved, tmp_path, capsys):
    import datasets

    split = datasets.load_from_disk(str(saved / "data"))["val"].select(range(2))
    huge = split.map(
        lambda r, i: {"height": 30000 if i == 1 else r["height"], "width": 30000 if i == 1 else r["width"]},
        with_indices=True,
    )
    datasets.DatasetDict({"val": huge}).save_to_disk(str(tmp_path / "data"))
    argv = ["evaluate", str(saved / "model"), "--data", str(tmp_path / "data"), "--quiet", "--device", "cpu"]
    _refused(argv, capsys, "30000×30000 = 900,000,000 pixels is over the limit")


def test_the_models_saved_grid_wins_over_the_datasets(saved, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(saved / "model", model)
    (model / "text4seg.json").write_text('{"grid": [5, 5]}')  # the dataset's records say 16×16
    out = tmp_path / "out"
    argv = [str(model), "--data", str(saved / "data"), "--limit", "1", "--out", str(out), "--quiet"]
    assert main(["evaluate", *argv, "--device", "cpu"]) == 0
    capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["grid"] == [5, 5]
    line = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    segment = t4s.extract_segments(line["text"])[0]
    assert t4s.decode(segment, t4s.TEXT4SEG.with_grid(5), strict=True).grid.shape == (5, 5)


# -- open-vocabulary semantic evaluation ---------------------------------------------------------------
def test_semantic_task_asks_the_whole_class_list_and_writes_the_per_class_table(
    saved, labelmap_data, tmp_path, capsys
):
    out = tmp_path / "out"
    classes = tmp_path / "classes.txt"
    classes.write_text("wall\nsky\n\nfloor\nceiling\n")
    argv = [str(saved / "model"), "--data", str(labelmap_data), "--task", "semantic", "--limit", "2"]
    argv += ["--classes", str(classes), "--question-style", "text4seg", "--out", str(out), "--quiet"]
    assert main(["evaluate", *argv, "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["classes"] == ["wall", "sky", "floor", "ceiling"]
    assert report["info"]["task"] == "semantic" and report["info"]["question_style"] == "text4seg"
    table = report["metrics"]["semantic"]["coarse"]["per_class"]
    assert list(table) == ["others", "wall", "sky", "floor", "ceiling"]
    assert sum(row["gt_pixels"] for row in table.values()) == 2 * 22 * 32  # ignored border left out
    assert table["ceiling"]["gt_pixels"] == 0
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [line["task"] for line in lines] == ["semantic", "semantic"]
    assert lines[0]["question"] == "wall | sky | floor | ceiling"
    assert "| semantic | mIoU |" in printed and "| ceiling | 0 |" in printed


def test_semantic_scores_of_two_processes_are_those_of_one(saved, labelmap_data, tmp_path):
    """3 label maps, grid 8, split 2 + 1 between two processes: the merged mIoU, foreground mIoU, pixel
    accuracy and per-class table equal one process's exactly."""
    args = [str(saved / "model"), "--data", str(labelmap_data), "--task", "semantic", "--batch-size", "1"]
    args += ["--quiet", "--device", "cpu"]
    assert main(["evaluate", *args, "--out", str(tmp_path / "one")]) == 0
    _evaluate_in_two_processes([*args, "--out", str(tmp_path / "two")])
    one, two = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("one", "two"))
    assert (one["info"]["processes"], two["info"]["processes"]) == (1, 2)
    assert two["info"]["n_samples"] == one["info"]["n_samples"] == 3
    assert two["metrics"] == one["metrics"]
    coarse = two["metrics"]["semantic"]["coarse"]
    assert {"mIoU", "mIoU_fg", "pixel_acc", "per_class"} <= set(coarse)
    assert sum(row["gt_pixels"] for row in coarse["per_class"].values()) == 3 * 22 * 32  # border ignored
    lines = [json.loads(line) for line in (tmp_path / "two" / "samples.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == [0, 1, 2]


def test_class_options_need_the_semantic_task(saved, labelmap_data, tmp_path, capsys):
    (tmp_path / "classes.txt").write_text("sky\n")
    argv = [
        "evaluate",
        str(saved / "model"),
        "--data",
        str(labelmap_data),
        "--classes",
        str(tmp_path / "classes.txt"),
    ]
    _refused(argv, capsys, "--classes goes with --task semantic")
    _refused(
        [
            "evaluate",
            str(saved / "model"),
            "--data",
            str(saved / "data"),
            "--task",
            "semantic",
            "--classes",
            "/nonexistent/classes.txt",
        ],
        capsys,
        "classes.txt",
    )


def test_question_style_words_every_task(saved, tmp_path, capsys):
    """--question-style is a model argument: referring records are asked in Text4Seg's wording too."""
    from text4seg.protocol.templates import TEXT4SEG_REFER_QUESTION

    out = tmp_path / "out"
    argv = [str(saved / "model"), "--data", str(saved / "data"), "--task", "refer", "--limit", "2"]
    argv += ["--batch-size", "2", "--question-style", "text4seg", "--out", str(out), "--quiet"]
    assert main(["evaluate", *argv, "--device", "cpu"]) == 0
    capsys.readouterr()
    assert json.loads((out / "report.json").read_text())["info"]["question_style"] == "text4seg"
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(line["task"] in ("refer", "instance") for line in lines)
    for line in lines:
        assert line["question"] == TEXT4SEG_REFER_QUESTION.format(expression=line["query"])


@pytest.mark.slow
def test_a_label_map_dataset_builds_trains_and_evaluates(tmp_path, capsys):
    """The issue's path for synthetic label-map data: build (each image stored once in the build, the
    folder then moved and the sources deleted), train a tiny model 2 steps, evaluate with --task semantic."""
    import shutil

    from support.labelmaps import label_values, write_preset

    for split in ("train", "val"):
        maps = {f"{split}{k}": label_values(k, [1, 3], 0) for k in range(2)}
        write_preset("ade20k", tmp_path / "raw", split, maps)
    build = ["build", "ade20k", "--root", str(tmp_path / "raw"), "--grid", "8", "--image-store", "folder"]
    assert main([*build, "--out", str(tmp_path / "built"), "--quiet"]) == 0
    shutil.move(tmp_path / "built", tmp_path / "moved")
    shutil.rmtree(tmp_path / "raw")
    data, run = tmp_path / "moved", tmp_path / "run"
    overrides = [f"data.path={data}", "loop.max_steps=2", "loop.batch_size=2", f"output.dir={run}"]
    overrides += ["loop.eval_every=1000", "loop.save_every=1000", "model.tiny.image_size=64"]
    assert main(["train", "recipes/tiny_cpu.yaml", *overrides]) == 0
    out = tmp_path / "eval"
    argv = [str(run / "final"), "--data", str(data), "--task", "semantic", "--out", str(out)]
    assert main(["evaluate", *argv, "--quiet", "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["info"]["n_samples"] == 2 and report["info"]["grid"] == [8, 8]
    assert set(report["metrics"]["semantic"]["coarse"]["per_class"]) == {"others", "sky", "wall"}
    capsys.readouterr()
