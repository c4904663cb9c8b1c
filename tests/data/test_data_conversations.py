"""LLaVA / ms-swift conversation JSON -> conversation records: layouts, each bad case, the command, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import text4seg as t4s
from text4seg.cli import main
from text4seg.data.conversations import ConversationSet, iter_records, read_items
from text4seg.data.issues import DataError, IssueLog
from text4seg.protocol.records import load_records, split_record

FMT = t4s.TEXT4SEG.with_grid(4)
SEG_ANSWER = t4s.format_answer("Sure.", t4s.encode_mask(np.eye(8, dtype=bool), "the line", fmt=FMT), fmt=FMT)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "coco").mkdir(parents=True)
    Image.new("RGB", (40, 24), (200, 30, 30)).save(folder / "coco" / "a.png")
    Image.new("RGB", (16, 16), (30, 200, 30)).save(folder / "b.png")
    Image.new("RGB", (16, 16)).save(tmp_path / "outside.png")
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def _turn(who, text):
    return {"from": who, "value": text}


LLAVA_GOOD = [
    {
        "id": "two-turns",
        "image": "coco/a.png",
        "conversations": [
            _turn("human", "<image>\nWhat is shown?"),
            _turn("gpt", "A red picture."),
            _turn("human", "Is it bright?"),
            _turn("gpt", "Yes."),
        ],
    },
    {"id": "text-only", "conversations": [_turn("human", "Say hi."), _turn("gpt", "Hi.")]},
]
LLAVA_BAD = {
    "missing_image_file": {"image": "nope.png", "conversations": LLAVA_GOOD[0]["conversations"][:2]},
    "image_outside_root": {"image": "../outside.png", "conversations": LLAVA_GOOD[0]["conversations"][:2]},
    "unreadable_image": {"image": "broken.png", "conversations": LLAVA_GOOD[0]["conversations"][:2]},
    "empty_conversation": {"conversations": []},
    "bad_turn_order": {"conversations": [_turn("gpt", "Hi."), _turn("human", "Hello?")]},
    "unknown_role": {"conversations": [_turn("human", "Hi."), _turn("robot", "Beep.")]},
    "bad_turn": {"conversations": [_turn("human", ["not", "text"]), _turn("gpt", "Hi.")]},
    "image_marker_mismatch": {
        "image": "b.png",
        "conversations": [_turn("human", "<image> and <image>?"), _turn("gpt", "Two.")],
    },
    "empty_answer": {"conversations": [_turn("human", "Hi."), _turn("gpt", "  ")]},
}


def _write(tmp_path, items, name="data.json"):
    path = tmp_path / name
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def _read(path, images, strict=False, **kwargs):
    log = IssueLog(strict)
    return list(iter_records(ConversationSet(path, images, **kwargs), log)), log


def test_llava_items_become_conversation_records(tmp_path, images):
    records, log = _read(_write(tmp_path, LLAVA_GOOD), images)
    assert not log.items and [r["id"] for r in records] == ["llava/train/two-turns", "llava/train/text-only"]
    first, text_only = records
    assert first["messages"][0] == {
        "role": "user",
        "content": [{"type": "image", "text": None}, {"type": "text", "text": "What is shown?"}],
    }
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user", "assistant"]
    assert first["messages"][3]["content"] == [{"type": "text", "text": "Yes."}]
    assert (first["width"], first["height"], first["task"]) == (40, 24, "conversation")
    assert (
        first["masks"] == first["labels"] == first["grid"] == first["box"] == [] and not first["expression"]
    )
    assert first["source"]["dataset"] == "llava" and first["source"]["file_name"] == "coco/a.png"
    assert first["images"][0]["path"] == str((images / "coco" / "a.png").resolve())
    assert text_only["images"] == [] and (text_only["width"], text_only["height"]) == (0, 0)
    for record in records:
        split_record(record)  # the schema's own check: images match placeholders, last turn answers


def test_each_bad_llava_item_is_skipped_with_its_reason(tmp_path, images):
    items = [dict(item, id=reason) for reason, item in LLAVA_BAD.items()] + ["not an object"]
    path = _write(tmp_path, [*items, LLAVA_GOOD[1]])
    records, log = _read(path, images)
    assert [r["id"] for r in records] == ["llava/train/text-only"]
    found = {issue.id: issue.reason for issue in log.items}
    assert found == {
        **{f"llava/train/{reason}": reason for reason in LLAVA_BAD},
        f"llava/train/{len(items) - 1}": "bad_item",
    }
    assert all(issue.file == str(path) and issue.detail for issue in log.items)
    with pytest.raises(DataError, match="missing_image_file.*nope.png"):
        _read(path, images, strict=True)


def test_swift_items_keep_their_checked_descriptors(tmp_path, images):
    items = [
        {"query": "<image>Segment the line.", "response": SEG_ANSWER, "images": ["b.png"]},
        {
            "query": "And now?",
            "response": "Still there.",
            "images": [{"path": "coco/a.png"}],  # ms-swift also writes images as objects
            "history": [["Where is the line?", SEG_ANSWER]],
        },
        {
            "query": "<image>Again.",
            "response": SEG_ANSWER.replace("others *2\n", "others *1\n", 1),
            "images": ["b.png"],
        },
        {"query": "<image>Again.", "response": "<seg>others *4", "images": ["b.png"]},
    ]
    records, log = _read(_write(tmp_path, items, "swift.json"), images, name="text4seg")
    assert [r["id"] for r in records] == ["text4seg/train/0", "text4seg/train/1"]
    assert records[0]["messages"][1]["content"][0]["text"] == SEG_ANSWER
    assert (records[1]["width"], records[1]["height"]) == (40, 24)
    history = records[1]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant", "user", "assistant"]
    # no <image> marker: the image opens the first user turn
    assert (
        history[0]["content"][0] == {"type": "image", "text": None}
        and history[2]["content"][0]["type"] == "text"
    )
    assert {issue.id: issue.reason for issue in log.items} == {
        "text4seg/train/2": "bad_descriptor",
        "text4seg/train/3": "bad_descriptor",
    }


def test_files_that_are_not_a_list_are_one_error_naming_the_file(tmp_path, images, capsys):
    nested = tmp_path / "deep.json"
    nested.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(ValueError, match="deep.json: JSON nested too deep"):
        read_items(nested)
    not_list = _write(tmp_path, {"conversations": []}, "dict.json")
    code = main(
        ["build", "llava", "--json", str(not_list), "--images", str(images), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "dict.json" in err and "Traceback" not in err


def test_a_built_llava_dataset_loads_and_trains(tmp_path, images):
    from text4seg.models.tiny import build_tiny
    from text4seg.train.collate import IGNORE_INDEX, Collator

    path = _write(tmp_path, [*LLAVA_GOOD, dict(LLAVA_BAD["empty_conversation"], id="bad")])
    out = tmp_path / "built"
    args = ["build", "llava", "--json", str(path), "--images", str(images), "--out", str(out), "--quiet"]
    assert main([*args, "--image-store", "folder"]) == 0
    moved = out.rename(tmp_path / "moved")  # stored once under the build, so the folder can move
    assert load_records(moved)["train"][0]["images"] == [str(moved / "images" / "coco" / "a.png")]
    assert main(args) == 0
    report = json.loads((out / "build_report.json").read_text())
    assert report["records_total"] == 2 and report["skipped_by_reason"] == {"empty_conversation": 1}
    train = load_records(out)["train"]
    assert train["task"] == ["conversation", "conversation"]
    model, processor = build_tiny("qwen2_vl")
    batch = Collator(processor)(list(train))  # an image conversation and a text-only one in one batch
    assert batch["skipped"] == [] and batch["ids"] == ["llava/train/two-turns", "llava/train/text-only"]
    labelled = (batch["labels"] != IGNORE_INDEX).tolist()
    starts = [sum(1 for a, b in zip([False, *row], row, strict=False) if b and not a) for row in labelled]
    assert starts == [2, 1]  # both answers of the conversation, the one answer of the text-only item
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k not in ("skipped", "ids")}
        assert torch.isfinite(model(**inputs).loss)
