"""Bad input never kills a build: each case is skipped, counted and listed; --strict stops at it.

Every case damages a copy of the synthetic files on disk, as a broken download would.
"""

from __future__ import annotations

import json
import pickle

import pytest

from text4seg.data.build import REPORT_NAME, BuildConfig
from text4seg.data.refer import load_grefcoco
from text4seg.data.safe_pickle import load_pickle
from text4seg.data.spec import DataError

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CASES = (
    "missing_image_file",
    "polygon_too_small",
    "polygon_out_of_image",
    "rle_size_mismatch",
    "empty_mask",
    "non_utf8_sentence",
    "missing_image",
    "missing_category",
)


class Damage:
    """Applies damage cases to a copy, each on a different image, and says what must be reported."""

    def __init__(self, paths) -> None:
        self.paths = paths
        self.instances = json.loads(paths.instances.read_text())
        self.refs = load_pickle(paths.refs)
        self.anns = {a["id"]: a for a in self.instances["annotations"]}
        self.used_images: set[int] = set()

    def _ref(self, encoding: type) -> dict:
        for ref in self.refs:
            ann = self.anns[ref["ann_id"]]
            if ref["image_id"] not in self.used_images and isinstance(ann["segmentation"], encoding):
                self.used_images.add(ref["image_id"])
                return ref
        raise AssertionError(f"no unused ref with a {encoding.__name__} segmentation")

    @staticmethod
    def _ids(ref: dict) -> list[str]:
        return [f"refcoco/{ref['split']}/ref{ref['ref_id']}/sent{s['sent_id']}" for s in ref["sentences"]]

    def apply(self, case: str) -> list[str]:
        """Damage the files for ``case``; return the ids the report must list with that reason."""
        if case == "missing_image_file":
            ref = self._ref(list)
            image = next(im for im in self.instances["images"] if im["id"] == ref["image_id"])
            (self.paths.images / image["file_name"]).unlink()
            return [i for r in self.refs if r["image_id"] == ref["image_id"] for i in self._ids(r)]
        if case == "polygon_too_small":
            ref = self._ref(list)
            self.anns[ref["ann_id"]]["segmentation"] = [[1.0, 1.0, 9.0, 9.0]]
            return self._ids(ref)
        if case == "polygon_out_of_image":  # rasterised, this one vertex would cost gigabytes
            ref = self._ref(list)
            self.anns[ref["ann_id"]]["segmentation"] = [[10, 10, 1e8, 10, 40, 30]]
            return self._ids(ref)
        if case == "rle_size_mismatch":
            ref = self._ref(dict)
            self.anns[ref["ann_id"]]["segmentation"]["size"] = [7, 9]
            return self._ids(ref)
        if case == "empty_mask":
            ref = self._ref(list)
            image = next(im for im in self.instances["images"] if im["id"] == ref["image_id"])
            pixels = image["height"] * image["width"]
            self.anns[ref["ann_id"]]["segmentation"] = {
                "size": [image["height"], image["width"]],
                "counts": [pixels],
            }
            return self._ids(ref)
        if case == "non_utf8_sentence":
            ref = self._ref(list)
            ref["sentences"][0]["sent"] = b"the \xff\xfe circle"
            ref["sentences"][0]["raw"] = b"\xff"
            return self._ids(ref)[:1]
        if case in ("missing_image", "missing_category"):
            ann = dict(self.anns[self.refs[0]["ann_id"]], id=990000 + len(self.instances["annotations"]))
            ann["image_id" if case == "missing_image" else "category_id"] = 424242
            self.instances["annotations"].append(ann)
            return [f"ann{ann['id']}"]
        raise ValueError(case)

    def save(self) -> None:
        self.paths.instances.write_text(json.dumps(self.instances))
        with self.paths.refs.open("wb") as handle:
            pickle.dump(self.refs, handle, protocol=2)


def _build_refcoco(build_kind, paths, out, strict=False):
    return build_kind("refcoco", paths, out, config=BuildConfig(strict=strict, progress=False))


def test_every_bad_input_is_skipped_and_reported(corrupt_copy, build_kind, built, tmp_path):
    damage = Damage(corrupt_copy())
    expected = {case: damage.apply(case) for case in CASES}
    damage.save()
    result = _build_refcoco(build_kind, damage.paths, tmp_path / "out")
    report = json.loads((tmp_path / "out" / REPORT_NAME).read_text())
    listed = {(item["id"], item["reason"]) for item in report["skipped"]}
    for case, ids in expected.items():
        assert ids
        for item_id in ids:
            assert (item_id, case) in listed, (case, item_id)
    assert all(item["file"] for item in report["skipped"])
    assert report["skipped_total"] == sum(len(ids) for ids in expected.values()) == len(report["skipped"])
    assert report["skipped_by_reason"] == {case: len(ids) for case, ids in expected.items()}
    clean_total = built["refcoco"].report["records_total"]
    skipped_records = sum(len(ids) for case, ids in expected.items() if not ids[0].startswith("ann"))
    assert result.report["records_total"] == clean_total - skipped_records


@pytest.mark.parametrize("case", CASES)
def test_strict_stops_at_the_first_bad_input(corrupt_copy, build_kind, tmp_path, case):
    damage = Damage(corrupt_copy())
    ids = damage.apply(case)
    damage.save()
    with pytest.raises(DataError) as info:
        _build_refcoco(build_kind, damage.paths, tmp_path / "out", strict=True)
    message = str(info.value)
    assert case in message and ids[0] in message
    assert any(name in message for name in ("instances.json", "refs(unc).p"))
    assert not (tmp_path / "out").exists()


def test_coco_build_skips_records_needing_a_bad_annotation(corrupt_copy, build_kind, tmp_path):
    paths = corrupt_copy()
    train = paths.instances_by_split["train"]
    data = json.loads(train.read_text())
    ann = next(a for a in data["annotations"] if isinstance(a["segmentation"], list) and not a["iscrowd"])
    ann["segmentation"] = [[0.0, 0.0, 5.0, 5.0]]
    train.write_text(json.dumps(data))
    result = build_kind("coco", paths, tmp_path / "out", splits=["train"])
    skipped = {(i["id"], i["reason"]) for i in result.report["skipped"]}
    prefix = f"coco/train/img{ann['image_id']}"
    assert (f"{prefix}/cat{ann['category_id']}", "polygon_too_small") in skipped
    assert (f"{prefix}/sem_all", "polygon_too_small") in skipped
    assert all(
        not r["id"].startswith(prefix + "/") or ann["id"] not in r["source"]["ann_ids"]
        for r in result.dataset["train"]
    )


def test_grefs_json_with_undecodable_bytes(corrupt_copy):
    paths = corrupt_copy()
    raw = paths.grefs.read_bytes()
    first = json.loads(raw)[0]["sentences"][0]["sent"].encode()
    paths.grefs.write_bytes(raw.replace(b'"sent": "' + first + b'"', b'"sent": "' + first + b'\xff"', 1))
    source = load_grefcoco(paths.grefs, paths.images)
    assert [issue.reason for issue in source.issues] == ["non_utf8_sentence"]
    assert source.specs and all(spec.expression.encode("utf-8") for spec in source.specs)


def test_strict_rerun_does_not_hide_problems_behind_the_cache(corrupt_copy, build_kind, tmp_path):
    damage = Damage(corrupt_copy())
    damage.apply("empty_mask")
    damage.save()
    assert _build_refcoco(build_kind, damage.paths, tmp_path / "out").report["skipped_total"] > 0
    with pytest.raises(DataError, match="empty_mask"):
        _build_refcoco(build_kind, damage.paths, tmp_path / "out", strict=True)
