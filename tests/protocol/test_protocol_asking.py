"""Segmenter settings inferred from training records and saved as MODEL/text4seg.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

import text4seg as t4s
from text4seg.protocol.asking import (
    SETTINGS_FILE,
    Asking,
    load_settings,
    settings_from_records,
    write_settings,
)


def _record(expression, label, grid=8, sentence="Here is the red circle.", with_grid_column=True):
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


def test_expression_labels_and_template_sentences_give_only_the_grid():
    records = [
        _record("the red circle", "the red circle", sentence="Here is the red circle."),
        _record("a blue star", "a blue star", sentence="A blue star does not appear in the picture."),
    ]
    assert settings_from_records(records) == {"grid": [8, 8]}


def test_sentences_the_templates_do_not_write_make_the_answer_form_free():
    records = [_record("the red circle", "the red circle", sentence="red circle")]
    assert settings_from_records(records) == {"grid": [8, 8], "answer_sentences": "free"}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"grid": 0}, "grid must be"),
        ({"grid": [16, 100000]}, "grid must be"),
        ({"background_bias": float("nan")}, "finite"),
        ({"background_bias": "1"}, "finite"),
        ({"answer_sentences": "some"}, "answer_sentences must be one of"),
        ({"upsample": "bicubic"}, "upsample must be one of"),
        ({"target_label": ""}, "non-empty"),
        ({"question_style": "pipe"}, "question_style must be one of"),
    ],
)
def test_bad_settings_are_refused_naming_the_file(tmp_path, values, message):
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(values))
    with pytest.raises(ValueError, match=message) as err:
        load_settings(tmp_path)
    assert SETTINGS_FILE in str(err.value)


def test_asking_round_trips_through_its_file(tmp_path):
    asking = Asking(
        grid=(24, 24),
        target_label="target",
        answer_sentences="free",
        background_bias=1.5,
        question_style="text4seg",
    )
    asking.save(tmp_path)
    assert Asking.load(tmp_path) == asking
    assert Asking.load(tmp_path / "nowhere") is None


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


def test_conversation_records_do_not_change_the_answer_form():
    chat = {
        "task": "conversation",
        "labels": [],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
        ],
    }
    records = [_record("the red circle", "target", sentence=None), chat]
    assert settings_from_records(records) == {
        "grid": [8, 8],
        "target_label": "target",
        "answer_sentences": "none",
    }
