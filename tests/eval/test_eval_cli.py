"""`text4seg evaluate` end to end on a tiny random model, in one process and in two (accelerate, gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

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
