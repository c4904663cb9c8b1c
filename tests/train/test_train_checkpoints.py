"""Checkpoints: each checkpoint-N is a model folder of its own; resume survives a broken latest checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from text4seg.models import load_model_and_processor
from text4seg.train import config_from_dict, train
from text4seg.train.checkpoints import BrokenCheckpointWarning, CheckpointError, complete_checkpoints

COMMON = {
    "model": {"name_or_path": "tiny:qwen2_vl"},
    "finetune": {"lora_dropout": 0.0},
    "data": {"shuffle": True},
    "optim": {"lr": 1e-2, "scheduler": "constant"},
    "loop": {"batch_size": 2, "max_steps": 3, "save_every": 1, "keep_checkpoints": 3, "progress": False},
}


def _config(run_dir, **sections):
    data = {**COMMON, "output": {"dir": str(run_dir)}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    return config_from_dict(data)


def _logits(folder):
    model, _ = load_model_and_processor(folder, dtype="float32")
    with torch.no_grad():
        return model(input_ids=torch.tensor([[3, 4, 5, 6, 7]])).logits


@pytest.mark.parametrize("method", ["lora", "full"])
def test_checkpoint_loads_like_final(method, records, tmp_path):
    result = train(_config(tmp_path / "run", finetune={"method": method}), train_dataset=records[:4])
    last = complete_checkpoints(result.output_dir)[-1]
    assert last.name == "checkpoint-3"
    for checkpoint in complete_checkpoints(result.output_dir):
        assert json.loads((checkpoint / "text4seg.json").read_text()) == {"grid": [8, 8]}
        assert (checkpoint / "tokenizer_config.json").is_file()
        if method == "lora":
            assert (checkpoint / "adapter_config.json").is_file()
        else:
            assert (checkpoint / "config.json").is_file() and (checkpoint / "model.safetensors").is_file()
    # the last checkpoint and final/ hold the same step: the same model comes back from both
    assert torch.allclose(_logits(last), _logits(result.final_dir), atol=1e-5)


@pytest.fixture(scope="module")
def finished_run(records, tmp_path_factory):
    """A run with checkpoints 1, 2, 3 and its losses (the uninterrupted reference)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = train(_config(run_dir), train_dataset=records)
    assert [p.name for p in complete_checkpoints(run_dir)] == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    return run_dir, result.losses


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path):
    path.write_bytes(b"this is not a torch file")


def _empty(path):
    path.write_text("")


BREAKS = {  # (file of checkpoint-3, how it is broken, words of the warning)
    "truncated weights": ("model.safetensors", _truncate, "not a readable safetensors file"),
    "truncated adapter": ("adapter_model.safetensors", _truncate, "not a readable safetensors file"),
    "garbage optimizer": ("optimizer.bin", _garble, "not a readable torch file"),
    "empty trainer state": ("trainer_state.json", _empty, "not a readable trainer state"),
}


@pytest.mark.parametrize("case", sorted(BREAKS))
def test_resume_falls_back_past_a_broken_checkpoint(case, finished_run, records, tmp_path):
    reference, losses = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    name, spoil, words = BREAKS[case]
    spoil(run_dir / "checkpoints" / "checkpoint-3" / name)
    with pytest.warns(BrokenCheckpointWarning, match=rf"checkpoint-3.{name}: {words}"):
        resumed = train(_config(run_dir, loop={"max_steps": 4}), train_dataset=records)
    assert resumed.resumed_from == run_dir / "checkpoints" / "checkpoint-2"
    assert resumed.losses[:3] == pytest.approx(losses, rel=1e-5, abs=1e-6)  # steps 1-2 kept, 3 redone
    assert resumed.steps == 4 and (run_dir / "final" / "adapter_config.json").is_file()


def test_resume_refuses_when_no_checkpoint_is_intact(finished_run, records, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], run_dir)
    for checkpoint in complete_checkpoints(run_dir):
        _garble(checkpoint / "optimizer.bin")
    with pytest.warns(BrokenCheckpointWarning):
        with pytest.raises(CheckpointError, match=r"no intact checkpoint.*checkpoint-1.optimizer\.bin"):
            train(_config(run_dir, loop={"max_steps": 4}), train_dataset=records)
    # refused before a step: nothing was logged
    assert (run_dir / "metrics.jsonl").read_text() == (finished_run[0] / "metrics.jsonl").read_text()
