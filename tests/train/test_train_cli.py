"""The command line on a `datasets` folder in the RECORDS.md schema, in one process and under accelerate launch."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from text4seg.train.cli import main as train_main


def _save_dataset(records: list[dict], path: Path) -> Path:
    from datasets import Dataset, DatasetDict, Features, Image, List, Value

    features = Features(
        {
            "id": Value("string"),
            "images": List(Image()),
            "messages": List(
                {"role": Value("string"), "content": List({"type": Value("string"), "text": Value("string")})}
            ),
        }
    )
    rows = [{k: r[k] for k in ("id", "images", "messages")} for r in records]
    DatasetDict(
        {
            "train": Dataset.from_list(rows[:4], features=features),
            "val": Dataset.from_list(rows[4:], features=features),
        }
    ).save_to_disk(str(path))
    return path


def _recipe(tmp_path: Path, data: Path, out: Path) -> Path:
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(
        f"""
model:
  name_or_path: tiny:smolvlm
data:
  path: {data}
  eval_split: val
optim:
  lr: 1.0e-2
loop:
  batch_size: 2
  max_steps: 2
  log_every: 1
output:
  dir: {out}
"""
    )
    return recipe


def test_cli_trains_from_a_saved_dataset(records, tmp_path, capsys):
    from text4seg.protocol.asking import Asking

    data = _save_dataset(records, tmp_path / "data")
    Asking(question="Where is {expression}?", upsample="bilinear").save(data)  # as the data's maker would
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, data, out)
    assert train_main([str(recipe), "loop.max_steps=3", "finetune.lora_r=4", "loop.save_every=3"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["eval_loss"] is not None
    assert Path(summary["final_dir"], "adapter_config.json").is_file()
    # the data folder's settings, completed by the records' grid, beside the model and its checkpoint
    asking = {"grid": [8, 8], "question": "Where is {expression}?", "upsample": "bilinear"}
    for folder in (out / "final", out / "checkpoints" / "checkpoint-3"):
        assert json.loads((folder / "text4seg.json").read_text()) == asking
    saved = json.loads((out / "config.json").read_text())
    assert saved["finetune"]["lora_r"] == 4
    assert train_main([str(recipe), "loop.batch_size=zero"]) == 2
    assert "loop.batch_size" in capsys.readouterr().err


def test_text4seg_dispatch_has_train():
    from text4seg.cli import build_parser

    args = build_parser().parse_args(["train", "recipes/tiny_cpu.yaml", "optim.lr=1e-3"])
    assert args.overrides == ["optim.lr=1e-3"] and callable(args.func)


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(records, tmp_path):
    data = _save_dataset(records, tmp_path / "data")
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, data, out)
    # Accelerate's multi-process CPU mode (gloo): torch.distributed launcher + ACCELERATE_USE_CPU.
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="true")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "text4seg.train", str(recipe), "loop.save_every=1",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{"steps"')]
    assert len(summaries) == 1 and summaries[0]["steps"] == 2, proc.stdout  # printed by rank 0 only
    # saved once: one metrics line per step, one final adapter, complete checkpoints only
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [1, 2]
    assert (out / "final" / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    assert sorted(p.name for p in (out / "checkpoints" / "checkpoint-2").glob("random_states_*")) == [
        "random_states_0.pkl",
        "random_states_1.pkl",
    ]


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: these mistakes must be found before."""

    def refuse(config):
        raise AssertionError(f"a model was loaded for {config.model.name_or_path}")

    monkeypatch.setattr("text4seg.train.trainer.build_model", refuse)


def _dataset_without_messages(path: Path) -> Path:
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list([{"id": "a", "text": "x"}])}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize(
    ("data", "overrides", "words"),
    [
        ("missing", [], r"data.path .*missing does not exist"),
        ("empty", [], r"data.path .*empty is not a saved dataset"),
        ("records", ["data.train_split=training"], r"has no split 'training' \(it has train, val\)"),
        ("no_messages", [], r"split 'train' has no column 'messages' \(it has id, text\)"),
        ("records", ["optim.lr=inf"], r"optim.lr: must be a finite number"),
        ("records", ["optim.weight_decay=nan"], r"optim.weight_decay: must be a finite number"),
    ],
)
def test_mistakes_are_one_line_before_a_model_loads(
    data, overrides, words, no_model, records, tmp_path, capsys
):
    folders = {
        "missing": lambda p: p,
        "empty": lambda p: p.mkdir() or p,
        "records": lambda p: _save_dataset(records, p),
        "no_messages": _dataset_without_messages,
    }
    path = folders[data](tmp_path / data)
    recipe = _recipe(tmp_path, path, tmp_path / "run")
    capsys.readouterr()  # the progress bars of saving the dataset
    assert train_main([str(recipe), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert re.search(words, err), err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--config", "r.yaml"], "the recipe is the first argument (text4seg train r.yaml [key=value ...])"),
        (
            ["r.yaml", "--lr", "1e-4"],
            "settings are overrides after the recipe (text4seg train RECIPE optim.lr=1e-4)",
        ),
        (["r.yaml", "--learning_rate=2e-5"], "optim.lr=2e-5"),
        (["r.yaml", "--output_dir", "out"], "output.dir=out"),
        ([], "name a recipe"),
    ],
)
def test_other_trainers_options_get_a_hint(argv, words, no_model, capsys):
    from text4seg.cli import main

    assert main(["train", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and words in err, err
