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
    group = report["metrics"]["refer"]["grefcoco"]
    assert set(group) == {"coarse", "refined"} and group["coarse"]["n"] == 5
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and all("refine" in line for line in lines)
    assert len(list((out / "overlays").glob("*.png"))) == 2
    assert "| grefcoco | gIoU |" in capsys.readouterr().out


def test_evaluate_command_reports_a_missing_split(saved, tmp_path, capsys):
    assert main(["evaluate", str(saved / "model"), "--data", str(saved / "data"), "--split", "test"]) == 2
    assert "split 'test' not in the dataset" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one(saved, tmp_path):
    single = tmp_path / "single"
    assert main(["evaluate", *_args(saved, single)]) == 0
    double = tmp_path / "double"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launcher += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launcher += ["--main_process_port", str(_free_port())]
    script = Path(__file__).with_name("_launch_evaluate.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run(
        [*launcher, str(script), *_args(saved, double)], env=env, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, run.stderr[-3000:]
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
