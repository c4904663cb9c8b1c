"""Training the light refiner on built records (text4seg.train.light_refiner, `text4seg train-refiner`)."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
import torch
from support.records import built

from text4seg.cli import main
from text4seg.models.light_refiner import CONFIG_NAME, WEIGHTS_NAME, LightRefinerConfig, load_light_refiner
from text4seg.protocol.records import ground_truth
from text4seg.train.light_refiner import (
    RefinerTraining,
    examples_from_records,
    record_targets,
    train_light_refiner,
)

SMALL = LightRefinerConfig(widths=(4, 8, 16), side=32)


def test_refer_records_give_one_example_per_record_with_a_target():
    records = built("refcoco", images=2, size=48, grid=8)
    examples = examples_from_records(records, SMALL)
    with_target = [r for r in records if ground_truth(r).mask.any()]
    assert len(examples) == len(with_target) > 0
    first = examples[0]
    h, w = first["input"].shape[1:]
    assert first["input"].shape[0] == 5 and max(h, w) == SMALL.side
    assert first["base"].shape == first["truth"].shape == (1, 2 * h, 2 * w)


def test_semantic_records_give_one_example_per_label():
    record = built("semantic", images=2, size=48, grid=8)[0]
    targets = list(record_targets(record))
    assert len(targets) == sum(m.any() for m in ground_truth(record).masks) > 1
    assert all(grid == (8, 8) and mask.shape == image.shape[:2] for image, mask, grid in targets)


def test_a_few_steps_change_the_net_and_report_a_finite_loss():
    examples = examples_from_records(built("refcoco", images=2, size=48, grid=8), SMALL)
    net, info = train_light_refiner(examples, SMALL, RefinerTraining(steps=3, batch=2, crop=16))
    assert info["steps"] == 3 and np.isfinite(info["loss"])
    assert not net.training and torch.count_nonzero(net.head.weight) > 0


def test_no_examples_is_refused():
    with pytest.raises(ValueError, match="no training examples"):
        train_light_refiner([], SMALL, RefinerTraining(steps=1))


def test_cli_trains_and_saves_a_loadable_refiner(tmp_path, capsys):
    data = tmp_path / "data"
    datasets.DatasetDict({"train": built("refcoco", images=2, size=48, grid=8)}).save_to_disk(str(data))
    out = tmp_path / "refiner"
    assert main(["train-refiner", "--data", str(data), "--out", str(out), "--steps", "2"]) == 0
    assert (out / WEIGHTS_NAME).is_file() and (out / CONFIG_NAME).is_file()
    assert load_light_refiner(out).config == LightRefinerConfig()
    assert "wrote" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train-refiner", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("text4seg train-refiner: --data") and "\n" not in err
    data = tmp_path / "data"
    datasets.DatasetDict({"train": built("refcoco", images=2, size=48, grid=8)}).save_to_disk(str(data))
    assert main(["train-refiner", "--data", str(data), "--split", "val", "--out", str(tmp_path / "r")]) == 2
    assert "no split 'val'" in capsys.readouterr().err
