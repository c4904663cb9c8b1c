"""The step loop refuses to go on past a loss that is not finite: clear error, last good checkpoint kept."""

from __future__ import annotations

import pytest

import text4seg.train.loss as loss_module
from text4seg.train import config_from_dict, train
from text4seg.train.checkpoints import complete_checkpoints
from text4seg.train.loop import NonFiniteLossError


@pytest.fixture
def nan_from_step_3(monkeypatch):
    """The training loss turns NaN at the third forward pass (as an lr of 1e30 would, but surely)."""
    real, calls = loss_module.answer_loss, []

    def answer_loss(model, batch, keep_logits=True):
        calls.append(1)
        loss = real(model, batch, keep_logits)
        return loss * float("nan") if len(calls) >= 3 else loss

    monkeypatch.setattr(loss_module, "answer_loss", answer_loss)


def _config(tmp_path):
    return config_from_dict(
        {
            "model": {"name_or_path": "tiny:qwen2_vl"},
            "loop": {"batch_size": 2, "max_steps": 5, "save_every": 1, "progress": False},
            "output": {"dir": str(tmp_path / "run")},
        }
    )


def test_nan_loss_stops_keeps_last_good_checkpoint_and_saves_no_final(nan_from_step_3, records, tmp_path):
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 3") as caught:
        train(_config(tmp_path), train_dataset=records)
    run = tmp_path / "run"
    assert caught.value.step == 3 and caught.value.checkpoint == run / "checkpoints" / "checkpoint-2"
    assert [p.name for p in complete_checkpoints(run)] == ["checkpoint-1", "checkpoint-2"]
    assert not (run / "final").exists()
    assert '"event": "non_finite_loss"' in (run / "metrics.jsonl").read_text()


def test_cli_exits_non_zero_with_one_line(nan_from_step_3, records, tmp_path, capsys):
    from test_train_cli import _recipe, _save_dataset

    recipe = _recipe(tmp_path, _save_dataset(records, tmp_path / "data"), tmp_path / "run")
    from text4seg.train.cli import main

    assert main([str(recipe), "loop.max_steps=5", "loop.progress=false"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: the training loss is nan at step 3"), err
    assert "Traceback" not in err
