"""Fixtures for the evaluation tests: records made by the real builder (`support.records`); the oracle
segmenters live in eval_records.py."""

from __future__ import annotations

import datasets
import pytest
from support.records import evaluation_split


@pytest.fixture(scope="session")
def records():
    """The ``val`` records of three synthetic images: referring (gRefCOCO) and semantic."""
    return evaluation_split()


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """A tiny random Qwen2.5-VL saved to disk and a built-style dataset (split `val`) beside it."""
    from text4seg.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("eval_cli")
    model, processor = build_tiny("qwen2_5_vl")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    datasets.DatasetDict({"val": evaluation_split(2)}).save_to_disk(str(root / "data"))
    return root


@pytest.fixture(scope="session")
def labelmap_data(tmp_path_factory):
    """A built semantic dataset (split `val`, 8×8 grid) from three tiny ADE20K-layout label maps whose
    2-pixel top border is ignored: classes wall, sky, floor (ADE values 1, 3, 4)."""
    from support.labelmaps import label_values, write_preset

    from text4seg.data.labelmap import LabelMapOptions, build_labelmaps

    root = tmp_path_factory.mktemp("labelmaps")
    maps = {"a": label_values(0, [1, 3], 0), "b": label_values(1, [3, 4], 0), "c": label_values(2, [4], 0)}
    data = write_preset("ade20k", root / "raw", "val", maps)
    build_labelmaps([data], LabelMapOptions(grid=8), root / "built", progress=False)
    return root / "built"
