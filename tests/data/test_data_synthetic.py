"""The synthetic writer produces real-format files whose pixels, masks and expressions agree."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from text4seg.data.masks import decode_segmentation
from text4seg.data.safe_pickle import load_pickle
from text4seg.data.synthetic import COLORS, KINDS, generate_sample, iter_samples, make_synthetic

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

NUM_IMAGES = 30
IMAGE_SIZE = (160, 120)


def _instances(synth):
    return json.loads(synth.instances.read_text())


def test_files_exist_in_coco_layout(synth):
    data = _instances(synth)
    assert len(data["images"]) == NUM_IMAGES
    assert {c["name"] for c in data["categories"]} == set(KINDS)
    suffixes = Counter(im["file_name"].rsplit(".", 1)[1] for im in data["images"])
    assert suffixes["jpg"] > 0 and suffixes["png"] > 0
    for im in data["images"]:
        with Image.open(synth.images / im["file_name"]) as image:
            assert image.size == (im["width"], im["height"]) == IMAGE_SIZE
    split_images = sum(len(json.loads(p.read_text())["images"]) for p in synth.instances_by_split.values())
    assert split_images == NUM_IMAGES and set(synth.instances_by_split) == {"train", "val", "test"}


def test_all_segmentation_encodings_and_crowd_present(synth):
    kinds = Counter()
    for ann in _instances(synth)["annotations"]:
        seg = ann["segmentation"]
        if isinstance(seg, list):
            kinds["polygon"] += 1
        elif isinstance(seg["counts"], list):
            kinds["uncompressed"] += 1
        else:
            kinds["compressed"] += 1
        kinds["crowd"] += ann["iscrowd"]
    assert kinds["polygon"] > kinds["uncompressed"] > 0
    assert kinds["compressed"] > 0 and kinds["crowd"] > 0


def test_masks_match_files_and_pixels(synth):
    data = _instances(synth)
    anns = defaultdict(list)
    for ann in data["annotations"]:
        anns[ann["image_id"]].append(ann)
    for i, sample in enumerate(iter_samples(NUM_IMAGES, seed=7, image_size=IMAGE_SIZE)):
        info = data["images"][i]
        pixels = np.asarray(Image.open(synth.images / info["file_name"]).convert("RGB"), dtype=np.float32)
        assert len(sample.shapes) == len(anns[i + 1])
        for shape, ann in zip(sample.shapes, anns[i + 1], strict=True):
            decoded = decode_segmentation(ann["segmentation"], info["height"], info["width"])
            assert np.array_equal(decoded, shape.mask)
            mean = pixels[shape.mask].mean(axis=0)
            nearest = min(COLORS, key=lambda c: np.abs(np.asarray(COLORS[c]) - mean).sum())
            assert nearest == shape.color, (info["file_name"], ann["id"])


def test_refs_pickle_and_grefs_json(synth):
    refs = load_pickle(synth.refs)
    assert len(refs) == synth.num_refs > 0
    ref = refs[0]
    assert {"ref_id", "ann_id", "image_id", "split", "sentences", "category_id"} <= set(ref)
    assert {"sent", "sent_id", "tokens", "raw"} <= set(ref["sentences"][0])
    grefs = json.loads(synth.grefs.read_text())
    no_target = [g for g in grefs if g["no_target"]]
    multi = [g for g in grefs if len(g["ann_id"]) > 1]
    assert no_target and all(g["ann_id"] == [-1] for g in no_target)
    assert any(g["sentences"][0]["sent"].startswith("all ") for g in multi)


def test_no_target_expressions_name_absent_shapes():
    for sample in iter_samples(20, seed=3):
        for expression in sample.expressions:
            if expression.kind == "none":
                color, kind = expression.sentences[0].split()[1:3]
                assert all((s.color, s.kind) != (color, kind) for s in sample.shapes)
                assert not sample.mask(expression).any()


def test_distractors_and_disambiguation():
    samples = list(iter_samples(30, seed=5))
    with_distractor = 0
    for sample in samples:
        solid = [s for s in sample.shapes if not s.crowd]
        pairs = [(a, b) for i, a in enumerate(solid) for b in solid[i + 1 :]]
        if any(a.kind == b.kind or a.color == b.color for a, b in pairs):
            with_distractor += 1
        for expression in sample.expressions:
            if expression.kind != "single":
                continue
            target = sample.shapes[expression.targets[0]]
            text = expression.sentences[0]
            assert target.color in text and target.kind in text
            twins = [s for s in solid if s is not target and (s.kind, s.color) == (target.kind, target.color)]
            if twins:
                assert any(w in text for w in ("small", "large", "left", "right", "top", "bottom", "middle"))
    assert with_distractor >= len(samples) / 3


def test_deterministic_per_seed(tmp_path):
    a = make_synthetic(tmp_path / "a", num_images=6, image_size=64, seed=11)
    b = make_synthetic(tmp_path / "b", num_images=6, image_size=64, seed=11)
    c = make_synthetic(tmp_path / "c", num_images=6, image_size=64, seed=12)
    for name in ("instances.json", "refs(unc).p", "grefs(unc).json"):
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()
    assert (a.root / "instances.json").read_bytes() != (c.root / "instances.json").read_bytes()
    for image in sorted(a.images.iterdir()):
        assert image.read_bytes() == (b.images / image.name).read_bytes()


def _tree(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_interrupted_rebuild_is_never_reused(tmp_path, monkeypatch):
    from text4seg.data import synthetic

    folder = tmp_path / "shared"
    make_synthetic(folder, num_images=8, image_size=48, seed=0)
    real = synthetic.iter_samples

    def interrupted(*args, **kwargs):
        for k, sample in enumerate(real(*args, **kwargs)):
            if k == 5:
                raise KeyboardInterrupt("killed mid-write")
            yield sample

    monkeypatch.setattr(synthetic, "iter_samples", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic(folder, num_images=8, image_size=48, seed=1, reuse=True)
    manifest = json.loads((folder / "synthetic.json").read_text())
    assert manifest["complete"] is False and manifest["params"]["seed"] == 1
    monkeypatch.setattr(synthetic, "iter_samples", real)
    make_synthetic(folder, num_images=8, image_size=48, seed=0, reuse=True)
    fresh = make_synthetic(tmp_path / "fresh", num_images=8, image_size=48, seed=0)
    assert _tree(folder) == _tree(fresh.root)


def test_reuse_checks_every_file(tmp_path):
    paths = make_synthetic(tmp_path / "s", num_images=4, image_size=48, seed=3)
    image = sorted(paths.images.iterdir())[0]
    original = image.read_bytes()
    image.write_bytes(original[:-10])  # damaged after the manifest was written
    make_synthetic(tmp_path / "s", num_images=4, image_size=48, seed=3, reuse=True)
    assert image.read_bytes() == original


def test_in_memory_sample_is_consistent():
    sample = generate_sample(42, image_size=(96, 64), distractor=True, crowd=True)
    assert sample.image.shape == (64, 96, 3) and sample.image.dtype == np.uint8
    assert any(s.crowd for s in sample.shapes)
    for shape in sample.shapes:
        rle = mask_utils.frPyObjects([list(p) for p in shape.polygons], 64, 96)
        assert np.array_equal(mask_utils.decode(mask_utils.merge(rle)).astype(bool), shape.mask)
    kinds = {e.kind for e in sample.expressions}
    assert "single" in kinds and "none" in kinds
