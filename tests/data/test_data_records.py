"""Record making for one image: memory stays that of one record's masks, however many annotations."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from text4seg.data.annotations import ImageInfo, RecordSpec, Source
from text4seg.data.build import BuildConfig
from text4seg.data.records import build_image, image_jobs

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
