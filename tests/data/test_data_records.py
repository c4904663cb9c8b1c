"""Record making for one image: memory stays that of one record's masks, however many annotations."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from text4seg.codec import grid_to_text
from text4seg.codec.grid import mask_to_box, mask_to_grid
from text4seg.data.annotations import ImageInfo, RecordSpec, Source
from text4seg.data.build import BuildConfig
from text4seg.data.masks import decode_segmentation, encode_counts
from text4seg.data.records import _Geometry, build_image, image_jobs

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

WIDTH, HEIGHT, COUNT = 640, 480, 2000


def _crowded_source(tmp_path) -> Source:
    """One 640×480 image with 2,000 small square annotations, all in one record's target."""
    Image.new("RGB", (WIDTH, HEIGHT), (90, 120, 30)).save(tmp_path / "crowd.png")
    rng = np.random.default_rng(0)
    annotations = {}
    for ann_id in range(1, COUNT + 1):
        x, y = rng.uniform(0, WIDTH - 12), rng.uniform(0, HEIGHT - 12)
        square = [x, y, x + 10, y, x + 10, y + 10, x, y + 10]
        annotations[ann_id] = {"id": ann_id, "image_id": 1, "category_id": 1, "segmentation": [square]}
    spec = RecordSpec(
        id="crowd/train/img1/cat1",
        task="refer",
        dataset="crowd",
        split="train",
        image_id=1,
        expression="dot",
        targets=("dot",),
        target_anns=(tuple(annotations),),
        variant="category",
    )
    image = ImageInfo(1, "crowd.png", WIDTH, HEIGHT)
    return Source("crowd", tmp_path / "instances.json", tmp_path, {1: image}, annotations, [spec])


def test_one_image_with_two_thousand_annotations_stays_small(tmp_path):
    (job,) = image_jobs(_crowded_source(tmp_path), BuildConfig(progress=False))
    tracemalloc.start()
    try:
        records, issues, stats = build_image(job)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not issues and len(records) == 1 and stats["annotations_decoded"] == COUNT
    assert records[0]["box"] and records[0]["masks"][0]
    # 2,000 decoded 640×480 masks held at once would be 614 MB; merged in RLE space it is a few masks
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed RLE counts of ``mask``, with empty runs slipped in (legal, but not canonical)."""
    flat = mask.reshape(-1, order="F").astype(int)
    runs = np.diff(np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]).tolist()
    runs = [0, *runs] if flat[0] else runs
    return [runs[0], 0, 0, *runs[1:], 0]


def _forms_source(tmp_path) -> tuple[Source, dict[int, np.ndarray]]:
    """An odd-sized image whose annotations come in every form (polygon, several polygons, crowd RLE
    with empty runs, compressed RLE), with one-, many- and no-annotation targets; and the masks."""
    width, height = 61, 47
    Image.new("RGB", (width, height)).save(tmp_path / "forms.png")
    rng = np.random.default_rng(3)
    blob = rng.random((height, width)) < 0.3
    square = np.zeros((height, width), dtype=bool)
    square[10:30, 5:25] = True
    segmentations = {
        1: [[3.0, 2.0, 40.0, 5.0, 20.0, 30.0]],
        2: [[50.0, 40.0, 60.0, 40.0, 58.0, 46.0], [1.0, 40.0, 9.0, 44.0, 2.0, 46.0]],
        3: {"size": [height, width], "counts": _runs(blob)},
        4: {"size": [height, width], "counts": encode_counts(square)},
    }
    masks = {a: decode_segmentation(s, height, width) for a, s in segmentations.items()}
    assert np.array_equal(masks[3], blob)
    annotations = {a: {"id": a, "image_id": 1, "segmentation": s} for a, s in segmentations.items()}
    targets = [(1,), (2,), (3,), (4,), (1, 2, 3, 4), (2, 4), ()]
    specs = [
        RecordSpec(f"forms/train/t{k}", "refer", "forms", "train", 1, "thing", ("thing",), (t,), "expression")
        for k, t in enumerate(targets)
    ]
    image = ImageInfo(1, "forms.png", width, height)
    return Source("forms", tmp_path / "i.json", tmp_path, {1: image}, annotations, specs), masks


def test_records_from_rle_equal_a_full_decode_for_every_form(tmp_path):
    source, masks = _forms_source(tmp_path)
    (job,) = image_jobs(source, BuildConfig(progress=False, grid=5))
    records, issues, _ = build_image(job)
    assert not issues and len(records) == len(source.specs)
    fmt = job.fmt
    for record, spec in zip(records, source.specs, strict=True):
        union = np.zeros((47, 61), dtype=bool)
        for a in spec.target_anns[0]:
            union |= masks[a]
        box = mask_to_box(union)
        assert record["masks"] == [encode_counts(union)], spec.target_anns
        assert record["box"] == ([float(v) for v in box] if box is not None else [])
        cells = grid_to_text(mask_to_grid(union, 5).astype(np.int32), record["labels"], fmt)
        assert cells in record["messages"][1]["content"][0]["text"]


def test_geometry_text_equals_grid_to_text_for_each_record_sharing_it():
    fmt = BuildConfig(grid=6).fmt
    grid = np.random.default_rng(1).integers(0, 3, size=(6, 6)).astype(np.int32)
    geometry = _Geometry(grid=grid, masks=["", ""], box=[], present=(True, True))
    for labels in (["red cat", "dog"], ["dog", "red cat"], ["a\ue0001\ue000", "b"], ["cat 10", "cat 1"]):
        labels = [fmt.background, *labels]
        assert geometry.text(labels, fmt) == grid_to_text(grid, labels, fmt)
