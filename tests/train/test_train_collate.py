"""Collator: only the answer and the end-of-turn token are labelled, for every architecture."""

from __future__ import annotations

import pytest
import torch

from text4seg.models import registry
from text4seg.models.tiny import ARCHS, build_tiny
from text4seg.train.collate import IGNORE_INDEX, Collator, RecordError


def _answer(record: dict) -> str:
    return record["messages"][-1]["content"][0]["text"]


@pytest.mark.parametrize("arch", ARCHS)
def test_labels_are_answer_plus_end_token(arch, records):
    model, processor = build_tiny(arch)
    collator = Collator(processor, max_length=1024, answer_token_type=registry.answer_token_type(model))
    batch = collator(records[:3])
    assert batch["skipped"] == []
    tok = processor.tokenizer
    end = registry.end_of_turn(processor)
    image_ids = {
        i
        for i in (
            getattr(model.config, "image_token_id", None),
            getattr(model.config, "image_token_index", None),
        )
        if i is not None
    }
    for row, record in enumerate(records[:3]):
        labels = batch["labels"][row]
        kept = labels[labels != IGNORE_INDEX].tolist()
        assert tok.decode(kept) == _answer(record) + end
        # the labelled span is one block at the end of the real tokens, and padding is never labelled
        n_real = int(batch["attention_mask"][row].sum())
        assert (labels[n_real:] == IGNORE_INDEX).all()
        assert labels[n_real - len(kept) : n_real].tolist() == kept
        ids = batch["input_ids"][row]
        assert ids[n_real - len(kept) : n_real].tolist() == kept
        # image tokens are present in the prompt and never labelled
        assert image_ids and any(int(i) in image_ids for i in ids[:n_real])
        assert not any(int(t) in image_ids for t in kept)
    if "token_type_ids" in batch and arch == "paligemma":
        # PaliGemma's prefix-LM: answer tokens are the suffix (type 1), the prompt is type 0
        assert torch.equal(
            batch["token_type_ids"].bool() & batch["attention_mask"].bool(), batch["labels"] != IGNORE_INDEX
        )
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k not in ("skipped", "ids")}
        assert torch.isfinite(model(**inputs).loss)


def test_too_long_records_are_skipped_with_their_id(records):
    _, processor = build_tiny("qwen2_vl")
    collator = Collator(processor, max_length=1024)
    lengths = [collator.encode(r).length for r in records[:3]]
    collator.max_length = sorted(lengths)[1]
    batch = collator(records[:3])
    too_long = [r["id"] for r, n in zip(records[:3], lengths, strict=True) if n > collator.max_length]
    assert batch["skipped"] == too_long and len(batch["ids"]) == 3 - len(too_long)
    collator.max_length = 8
    assert collator(records[:2]) == {"skipped": [r["id"] for r in records[:2]], "ids": []}


def test_bad_records_are_reported(records):
    _, processor = build_tiny("llava")
    collator = Collator(processor)
    bad = dict(records[0], id="bad/1", messages=records[0]["messages"][:1])
    with pytest.raises(RecordError, match="bad/1.*assistant"):
        collator([bad])
    two_images = dict(records[0], id="bad/2", images=records[0]["images"] * 2)
    with pytest.raises(RecordError, match="bad/2.*placeholder"):
        collator([two_images])


def _multi_turn(record: dict, rid: str = "multi/1") -> dict:
    """`record` continued by a text-only user turn and a second assistant answer."""
    more = [
        {"role": "user", "content": [{"type": "text", "text": "And what colour is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It is red."}]},
    ]
    return dict(record, id=rid, messages=[*record["messages"], *more])


def _labelled_spans(labels: torch.Tensor) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for i, value in enumerate(labels.tolist()):
        if value == IGNORE_INDEX:
            continue
        if spans and spans[-1][1] == i:
            spans[-1] = (spans[-1][0], i + 1)
        else:
            spans.append((i, i + 1))
    return spans


@pytest.mark.parametrize("arch", ARCHS)
def test_every_assistant_turn_of_a_conversation_is_labelled_beside_text_only_records(arch, records):
    model, processor = build_tiny(arch)
    collator = Collator(processor, max_length=4096, answer_token_type=registry.answer_token_type(model))
    record = _multi_turn(records[0])
    text_only = {
        "id": "text/0",
        "images": [],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Say hi."}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
        ],
    }
    if not registry.has_chat_template(processor):  # PaliGemma: one prefix (with the image), one suffix
        with pytest.raises(RecordError, match="multi/1.*no chat template"):
            collator([record])
        with pytest.raises(RecordError, match="text/0.*text-only"):
            collator([text_only])
        return
    batch = collator([record, records[1], text_only])  # records with and without images share a batch
    tok, end = processor.tokenizer, registry.end_of_turn(processor)
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    assert torch.equal(labels[labels != IGNORE_INDEX], ids[labels != IGNORE_INDEX])
    spans = _labelled_spans(labels)
    # exactly the two answers with their end tokens, in order; the user turns and the prompt are masked
    # (the template may render an earlier answer after a space, which its tokens then carry)
    texts = [tok.decode(ids[a:b].tolist()) for a, b in spans]
    assert [t.lstrip() for t in texts] == [_answer(records[0]) + end, "It is red." + end]
    assert spans[-1][1] == int(batch["attention_mask"][0].sum())
    between = tok.decode(ids[spans[0][1] : spans[1][0]].tolist())
    assert "And what colour is it?" in between
    # the one-answer record in the same batch is still labelled as before
    kept = batch["labels"][1][batch["labels"][1] != IGNORE_INDEX].tolist()
    assert tok.decode(kept) == _answer(records[1]) + end
    kept = batch["labels"][2][batch["labels"][2] != IGNORE_INDEX].tolist()
    assert tok.decode(kept) == "Hi." + end
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k not in ("skipped", "ids")}
        assert torch.isfinite(model(**inputs).loss)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "paligemma"])  # paligemma: one answer a record
def test_a_conversation_preprocesses_its_images_once_with_the_same_tokens(arch, records):
    from text4seg.train.collate import split_record

    _, processor = build_tiny(arch)
    collator = Collator(processor, max_length=4096)
    record = _multi_turn(_multi_turn(records[0]), "multi/3")  # three answers: four extra processor calls
    inner, calls = processor.image_processor, []

    class Counting:
        def __getattr__(self, name):
            return getattr(inner, name)

        def __call__(self, *args, **kwargs):
            calls.append(1)
            return inner(*args, **kwargs)

    processor.image_processor = Counting()
    plain = collator._encode(record, *split_record(record))  # what encode did before: no reuse
    assert len(calls) == 5
    calls.clear()
    once = collator.encode(record)
    assert len(calls) == 1 and type(processor.image_processor) is Counting  # put back afterwards
    assert once.labels == plain.labels and sum(label != IGNORE_INDEX for label in once.labels) > 0
    assert once.features.keys() == plain.features.keys()
    for key, value in plain.features.items():
        assert torch.equal(once.features[key], value), key


def test_a_template_that_rewrites_earlier_turns_is_refused(records):
    _, processor = build_tiny("qwen2_vl")
    processor.chat_template = (
        "turns={{ messages | length }}\n{% for m in messages %}{{ m.role }}: "
        "{% for c in m.content %}{% if c.type == 'text' %}{{ c.text }}{% else %}<|vision_start|><|image_pad|>"
        "<|vision_end|>{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    with pytest.raises(RecordError, match="multi/2.*not a prefix"):
        Collator(processor)([_multi_turn(records[0], "multi/2")])


def test_a_text_only_conversation_needs_no_image(records):
    _, processor = build_tiny("qwen2_vl")
    record = _multi_turn(records[0], "text/1")
    record["images"] = []
    record["messages"][0] = {"role": "user", "content": [{"type": "text", "text": "Hello there."}]}
    batch = Collator(processor)([record])
    assert batch["ids"] == ["text/1"] and "pixel_values" not in batch
    assert len(_labelled_spans(batch["labels"][0])) == 2
