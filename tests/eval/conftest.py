"""Fixtures for the evaluation tests (helpers live in eval_records.py)."""

from __future__ import annotations

import datasets
import pytest
from eval_records import make_records


@pytest.fixture(scope="session")
def records():
    return make_records()


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """A tiny random Qwen2.5-VL saved to disk and a built-style dataset (split `val`) beside it."""
    from text4seg.models.tiny import build_tiny

    root = tmp_path_factory.mktemp("eval_cli")
    model, processor = build_tiny("qwen2_5_vl")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    datasets.DatasetDict({"val": make_records(n_images=2)}).save_to_disk(str(root / "data"))
    return root
