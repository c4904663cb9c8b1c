"""The command line on a `datasets` folder in the RECORDS.md schema, in one process and under accelerate launch."""

from __future__ import annotations

import json
import os
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
    data = _save_dataset(records, tmp_path / "data")
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, data, out)
    assert train_main([str(recipe), "loop.max_steps=3", "finetune.lora_r=4"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["eval_loss"] is not None
    assert Path(summary["final_dir"], "adapter_config.json").is_file()
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
