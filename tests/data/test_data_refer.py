"""The RefCOCO and gRefCOCO loaders and the records built from them; ground truth from pycocotools."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import numpy as np
import pytest
from support.cocotruth import answer, coco_index, decode_masks, question, union

import text4seg as t4s
from text4seg.data.build import REPORT_NAME, BuildConfig
from text4seg.data.issues import DataError, Issue
from text4seg.data.refer import load_grefcoco, load_refcoco
from text4seg.data.safe_pickle import load_pickle

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def coco(synth):
    return coco_index(synth.instances)


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
            assert np.array_equal(decode_masks(record)[0], expected)
            decoded = t4s.decode(answer(record))
            assert np.array_equal(decoded.grid, t4s.mask_to_grid(expected, 16).astype(np.int32))
            assert decoded.labels[1:] in ([record["expression"]], [])
            assert answer(record).split("\n<seg>")[0] and record["expression"] in question(record)
            x0, y0, x1, y1 = record["box"]
            assert (x0, y0, x1, y1) == t4s.mask_to_box(expected)
    assert seen["list"] and seen["dict"]  # polygon and RLE annotations both referred to


def test_grefcoco_multi_and_no_target(built, coco, synth):
    grefs = {g["ref_id"]: g for g in json.loads(synth.grefs.read_text())}
    kinds = Counter()
    for split in built["grefcoco"].dataset.values():
        for record in split:
            gref = grefs[record["source"]["ref_id"]]
            masks = decode_masks(record)
            assert record["labels"] == ["others", record["expression"]]
            decoded = t4s.decode(answer(record), labels=record["labels"])
            if gref["no_target"]:
                kinds["none"] += 1
                assert record["source"]["ann_ids"] == [] and record["box"] == []
                assert not masks[0].any() and not decoded.grid.any()
            else:
                expected = union(coco, gref["ann_id"])
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


def _damage_annotations(paths) -> tuple[int, int]:
    """In a copy of the synthetic files: the annotation of the first ref gets an unknown category, the
    second ref names the annotation of another image, a later duplicate of a third ref's annotation id
    sits in another image. Returns (the refused annotation id, the first ref's image id)."""
    instances = json.loads(paths.instances.read_text())
    refs = load_pickle(paths.refs)
    anns = {a["id"]: a for a in instances["annotations"]}
    first = refs[0]
    anns[first["ann_id"]]["category_id"] = 424242
    other = next(r for r in refs if r["image_id"] not in (first["image_id"], refs[1]["image_id"]))
    refs[1]["ann_id"] = other["ann_id"]
    third = next(r for r in refs if r["image_id"] not in (first["image_id"], other["image_id"]))
    instances["annotations"].append(dict(anns[third["ann_id"]], image_id=other["image_id"]))
    paths.instances.write_text(json.dumps(instances))
    paths.refs.write_bytes(pickle.dumps(refs, protocol=2))
    return first["ann_id"], first["image_id"]


def test_deferred_loader_plans_the_same_specs_and_issues(corrupt_copy):
    paths = corrupt_copy()
    bad_ann, _ = _damage_annotations(paths)
    eager = load_refcoco(paths.refs, paths.images)
    deferred = load_refcoco(paths.refs, paths.images, deferred=True)
    plans = [pending.plan() for pending in deferred.pending]
    assert not deferred.specs and [p.image.id for p in deferred.pending] == sorted(eager.images)[: len(plans)]
    planned_specs = [spec for _, specs, _ in plans for spec in specs]
    assert sorted(planned_specs, key=lambda s: s.id) == sorted(eager.specs, key=lambda s: s.id)
    planned_issues = deferred.issues + [issue for *_, issues in plans for issue in issues]
    assert Counter(planned_issues) == Counter(eager.issues) and len(eager.issues) >= 4
    for needed, _, _ in plans:
        assert needed == {a: eager.annotations[a] for a in needed}
    refused = Issue(
        f"ann{bad_ann}", "missing_category", "category_id 424242 is not in categories", str(paths.instances)
    )
    assert refused in planned_issues
    reasons = Counter(issue.reason for issue in planned_issues)
    assert reasons["missing_annotation"] >= 1 and reasons["bad_ref"] >= 1  # the other image's annotation


def test_a_bad_annotation_met_in_a_worker_is_reported_as_by_the_loader(corrupt_copy, build_kind, tmp_path):
    paths = corrupt_copy()
    bad_ann, _ = _damage_annotations(paths)
    eager_ids = {issue.id for issue in load_refcoco(paths.refs, paths.images).issues}
    reports, messages = [], []
    for num_proc in (1, 2):
        build_kind(
            "refcoco",
            paths,
            tmp_path / f"out{num_proc}",
            config=BuildConfig(num_proc=num_proc, progress=False),
        )
        reports.append(json.loads((tmp_path / f"out{num_proc}" / REPORT_NAME).read_text())["skipped"])
        with pytest.raises(DataError) as info:
            config = BuildConfig(num_proc=num_proc, strict=True, progress=False)
            build_kind("refcoco", paths, tmp_path / f"strict{num_proc}", config=config)
        messages.append(str(info.value))
    assert reports[0] == reports[1]
    expected = {
        "id": f"ann{bad_ann}",
        "reason": "missing_category",
        "detail": "category_id 424242 is not in categories",
        "file": str(paths.instances),
    }
    assert expected in reports[0]
    assert eager_ids <= {item["id"] for item in reports[0]}
    assert (
        messages[0]
        == messages[1]
        == f"{paths.instances}: ann{bad_ann}: missing_category: category_id 424242 is not in categories"
    )
