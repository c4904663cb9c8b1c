"""Segmenter settings inferred from training records and saved as MODEL/text4seg.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

import text4seg as t4s
from text4seg.infer.settings import SETTINGS_FILE, load_settings, settings_from_records, write_settings


def _record(expression, label, grid=8, sentence="Sure.", with_grid_column=True):
    mask = np.zeros((32, 32), bool)
    mask[4:20, 8:24] = True
    fmt = t4s.TEXT4SEG.with_grid(grid)
    descriptor = t4s.encode_mask(mask, label, fmt=fmt)
    answer = t4s.format_answer(sentence, descriptor, fmt) if sentence else f"<seg>{descriptor}</seg>"
    record = {
        "task": "refer",
        "expression": expression,
        "labels": ["others", label],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": f"Segment {expression}."}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
    }
    if with_grid_column:
        record["grid"] = [grid, grid]
    return record


def test_fixed_label_grid_and_no_sentence_are_found():
    records = [
        _record("the red circle", "target", sentence=None),
        _record("a blue star", "target", sentence=None),
    ]
    assert settings_from_records(records) == {
        "grid": [8, 8],
        "target_label": "target",
        "answer_sentences": "none",
    }


def test_expression_labels_and_sentences_give_only_the_grid():
    records = [_record("the red circle", "the red circle"), _record("a blue star", "a blue star")]
    assert settings_from_records(records) == {"grid": [8, 8]}


def test_grid_is_read_from_the_answers_without_a_grid_column():
    records = [_record("the red circle", "the red circle", grid=12, with_grid_column=False)]
    assert settings_from_records(records) == {"grid": [12, 12]}
    mixed = records + [_record("a blue star", "a blue star", grid=16, with_grid_column=False)]
    assert "grid" not in settings_from_records(mixed)


def test_write_and_load_round_trip(tmp_path):
    path = write_settings(tmp_path, {"grid": [8, 8], "target_label": "target"})
    assert path.name == SETTINGS_FILE and json.loads(path.read_text())["target_label"] == "target"
    assert load_settings(tmp_path) == {"grid": (8, 8), "target_label": "target"}
    assert load_settings(tmp_path / "missing") == {}
    with pytest.raises(ValueError, match="unknown settings"):
        write_settings(tmp_path, {"colour": "red"})
    (tmp_path / SETTINGS_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        load_settings(tmp_path)
