"""COCO, RefCOCO and gRefCOCO loaders and the records built from them, on synthetic files.

Ground truth here comes independently from pycocotools' own ``COCO.annToMask``.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

import text4seg as t4s
from text4seg.data.coco import load_coco
from text4seg.data.refer import load_grefcoco, load_refcoco
from text4seg.data.safe_pickle import load_pickle

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def coco(synth) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(synth.instances))


def _union(coco: COCO, ann_ids) -> np.ndarray:
    image = coco.imgs[coco.anns[ann_ids[0]]["image_id"]] if ann_ids else None
    out = None
    for ann_id in ann_ids:
        mask = coco.annToMask(coco.anns[ann_id]).astype(bool)
        out = mask if out is None else out | mask
    return out if image is not None else None


def _answer(record) -> str:
    return record["messages"][1]["content"][0]["text"]


def _question(record) -> str:
    return record["messages"][0]["content"][1]["text"]


def _decode_masks(record) -> list[np.ndarray]:
    size = [record["height"], record["width"]]
    return [mask_utils.decode({"size": size, "counts": c.encode()}).astype(bool) for c in record["masks"]]


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
        expected = _union(coco, anns)
        assert np.array_equal(_decode_masks(record)[0], expected)
        decoded = t4s.decode(_answer(record), labels=record["labels"])
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
        for mask, ann in zip(_decode_masks(record), anns, strict=True):
            assert np.array_equal(mask, coco.annToMask(coco.anns[ann]).astype(bool))


def test_coco_semantic_records_mark_absent_classes_as_background(built, coco):
    records = [r for split in built["coco"].dataset.values() for r in split if r["task"] == "semantic"]
    absent_seen = 0
    for record in records:
        image_id = record["source"]["image_id"]
        present = {coco.cats[coco.anns[a]["category_id"]]["name"] for a in coco.getAnnIds(imgIds=[image_id])}
        decoded = t4s.decode(_answer(record), labels=record["labels"])
        assert decoded.ok
        masks = _decode_masks(record)
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


def test_refcoco_loader_one_spec_per_sentence(synth):
    refs = load_pickle(synth.refs)
    source = load_refcoco(synth.refs, synth.images)
    assert len(source.specs) == sum(len(r["sentences"]) for r in refs)
    spec = source.specs[0]
    ref = refs[0]
    assert spec.id == f"refcoco/{ref['split']}/ref{ref['ref_id']}/sent{ref['sentences'][0]['sent_id']}"
    assert spec.target_anns == ((ref["ann_id"],),)
    only_val = load_refcoco(synth.refs, synth.images, splits=["val"], dataset="refcoco+")
    assert only_val.specs and {s.split for s in only_val.specs} == {"val"}
    assert all(s.id.startswith("refcoco+/val/") for s in only_val.specs)


def test_refcoco_records_decode_to_the_annotation_grid(built, coco, synth):
    dataset = built["refcoco"].dataset
    instances = json.loads(synth.instances.read_text())
    encoding = {a["id"]: type(a["segmentation"]).__name__ for a in instances["annotations"]}
    seen = Counter()
    for split in dataset.values():
        for record in split:
            (ann_id,) = record["source"]["ann_ids"]
            seen[encoding[ann_id]] += 1
            expected = coco.annToMask(coco.anns[ann_id]).astype(bool)
            assert np.array_equal(_decode_masks(record)[0], expected)
            decoded = t4s.decode(_answer(record))
            assert np.array_equal(decoded.grid, t4s.mask_to_grid(expected, 16).astype(np.int32))
            assert decoded.labels[1:] in ([record["expression"]], [])
            assert _answer(record).split("\n<seg>")[0] and record["expression"] in _question(record)
            x0, y0, x1, y1 = record["box"]
            assert (x0, y0, x1, y1) == t4s.mask_to_box(expected)
    assert seen["list"] and seen["dict"]  # polygon and RLE annotations both referred to


def test_grefcoco_multi_and_no_target(built, coco, synth):
    grefs = {g["ref_id"]: g for g in json.loads(synth.grefs.read_text())}
    kinds = Counter()
    for split in built["grefcoco"].dataset.values():
        for record in split:
            gref = grefs[record["source"]["ref_id"]]
            masks = _decode_masks(record)
            assert record["labels"] == ["others", record["expression"]]
            decoded = t4s.decode(_answer(record), labels=record["labels"])
            if gref["no_target"]:
                kinds["none"] += 1
                assert record["source"]["ann_ids"] == [] and record["box"] == []
                assert not masks[0].any() and not decoded.grid.any()
            else:
                expected = _union(coco, gref["ann_id"])
                kinds["multi" if len(gref["ann_id"]) > 1 else "single"] += 1
                assert np.array_equal(masks[0], expected)
                assert np.array_equal(decoded.grid, t4s.mask_to_grid(expected, 16).astype(np.int32))
    assert kinds["none"] and kinds["multi"] and kinds["single"]


def test_grefcoco_loader_accepts_int_ids_and_refs_wrapper(synth, tmp_path):
    grefs = json.loads(synth.grefs.read_text())
    single = next(g for g in grefs if len(g["ann_id"]) == 1 and not g["no_target"])
    single = {**single, "ann_id": single["ann_id"][0], "category_id": single["category_id"][0]}
    del single["no_target"]
    empty = {**next(g for g in grefs if g["no_target"]), "ann_id": []}
    del empty["no_target"]
    path = tmp_path / "grefs(unc).json"
    path.write_text(json.dumps({"refs": [single, empty]}))
    source = load_grefcoco(path, synth.images, instances_file=synth.instances)
    assert [s.target_anns for s in source.specs][:1] == [((single["ann_id"],),)]
    assert all(s.target_anns == ((),) for s in source.specs if s.ref_id == empty["ref_id"])
