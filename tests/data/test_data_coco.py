"""The COCO loader and the records built from it, on synthetic files; ground truth from pycocotools."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from support.cocotruth import answer, coco_index, decode_masks, union

import text4seg as t4s
from text4seg.data.coco import load_coco

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def coco(synth):
    return coco_index(synth.instances)


def test_coco_loader_plans_three_tasks(synth):
    source = load_coco(synth.instances_by_split["train"], synth.images)
    tasks = Counter(spec.task for spec in source.specs)
    assert set(tasks) == {"refer", "instance", "semantic"}
    assert {spec.split for spec in source.specs} == {"train"}
    assert {spec.variant for spec in source.specs if spec.task == "semantic"} == {"all", "subset", "absent"}
    assert not source.issues


def test_coco_category_records_merge_all_instances(built, coco):
    records = [r for split in built["coco"].dataset.values() for r in split if r["task"] == "refer"]
    assert records
    for record in records:
        anns = record["source"]["ann_ids"]
        assert {coco.anns[a]["category_id"] for a in anns} == {coco.anns[anns[0]]["category_id"]}
        image_anns = coco.getAnnIds(
            imgIds=[record["source"]["image_id"]], catIds=[coco.anns[anns[0]]["category_id"]]
        )
        assert sorted(anns) == sorted(image_anns)  # crowd regions included
        expected = union(coco, anns)
        assert np.array_equal(decode_masks(record)[0], expected)
        decoded = t4s.decode(answer(record), labels=record["labels"])
        assert decoded.ok
        assert np.array_equal(decoded.grid, t4s.mask_to_grid(expected, 16).astype(np.int32))
        assert record["labels"] == ["others", record["expression"]]


def test_coco_instance_records_number_left_to_right(built, coco):
    records = [r for split in built["coco"].dataset.values() for r in split if r["task"] == "instance"]
    assert any(len(r["labels"]) > 2 for r in records)
    for record in records:
        anns = record["source"]["ann_ids"]
        assert not any(coco.anns[a]["iscrowd"] for a in anns)
        name = record["expression"]
        assert record["labels"] == ["others"] + [f"{name} {k + 1}" for k in range(len(anns))]
        centres = [coco.anns[a]["bbox"][0] + coco.anns[a]["bbox"][2] / 2 for a in anns]
        assert centres == sorted(centres)
        for mask, ann in zip(decode_masks(record), anns, strict=True):
            assert np.array_equal(mask, coco.annToMask(coco.anns[ann]).astype(bool))


def test_coco_semantic_records_mark_absent_classes_as_background(built, coco):
    records = [r for split in built["coco"].dataset.values() for r in split if r["task"] == "semantic"]
    absent_seen = 0
    for record in records:
        image_id = record["source"]["image_id"]
        present = {coco.cats[coco.anns[a]["category_id"]]["name"] for a in coco.getAnnIds(imgIds=[image_id])}
        decoded = t4s.decode(answer(record), labels=record["labels"])
        assert decoded.ok
        masks = decode_masks(record)
        assert record["expression"] == ", ".join(record["labels"][1:])
        rows = np.minimum(((np.arange(16) + 0.5) * record["height"] / 16).astype(int), record["height"] - 1)
        cols = np.minimum(((np.arange(16) + 0.5) * record["width"] / 16).astype(int), record["width"] - 1)
        for value, (label, mask) in enumerate(zip(record["labels"][1:], masks, strict=True), start=1):
            class_ids = coco.getCatIds(catNms=[label])
            full = np.zeros_like(mask)
            for ann in coco.getAnnIds(imgIds=[image_id], catIds=class_ids):
                full |= coco.annToMask(coco.anns[ann]).astype(bool)
            assert not (mask & ~full).any()
            sampled = full[np.ix_(rows, cols)]
            assert not ((decoded.grid == value) & ~sampled).any()
            if label not in present:
                absent_seen += 1
                assert not mask.any() and not (decoded.grid == value).any()
        if record["source"]["ann_ids"] == [] or not any(m.any() for m in masks):
            assert record["box"] == []
    assert absent_seen > 0
