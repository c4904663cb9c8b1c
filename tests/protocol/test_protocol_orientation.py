"""One orientation rule: an EXIF-rotated photo is seen upright, the same way, by the collator (training), the
evaluator and the segmenter (prediction), all through `text4seg.protocol.images`."""

from __future__ import annotations

import datasets
import numpy as np
import pytest
from support.images import H, W, exif_rotated_jpeg

from text4seg.protocol.records import encode_counts, load_records, record_features


def _saved_record(tmp_path, as_path: bool):
    """A record whose image is an EXIF-rotated JPEG (stored W×H, shown H×W), saved and loaded back; the
    image embedded (`datasets.Image`, which decodes it) or as a path string (read by our reader)."""
    upright = np.zeros((W, H), bool)  # the rotated photo is W tall and H wide
    upright[: W // 2] = True  # 90° clockwise: the red left half ends up on top
    record = {
        "id": "exif/0",
        "task": "refer",
        "expression": "the red half",
        "labels": ["others", "the red half"],
        "grid": [4, 4],
        "width": H,
        "height": W,
        "masks": [encode_counts(upright)],
        "box": [],
        "ignore": "",
        "images": [{"bytes": exif_rotated_jpeg(6), "path": None}],  # replaced by a path string below
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "text": None}, {"type": "text", "text": "Segment it."}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "<seg>others *4\n</seg>"}]},
        ],
        "source": {
            "dataset": "t",
            "split": "val",
            "image_id": 0,
            "ann_ids": [],
            "ref_id": -1,
            "sent_id": -1,
            "file_name": "x.jpg",
        },
    }
    if as_path:
        record["images"] = ["photo.jpg"]  # relative to the dataset folder, as builds that store images once
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "photo.jpg").write_bytes(exif_rotated_jpeg(6))
    ds = datasets.Dataset.from_list([record], features=record_features(image_paths=as_path))
    datasets.DatasetDict({"val": ds}).save_to_disk(str(tmp_path / "data"))
    return load_records(tmp_path / "data")["val"][0]


@pytest.mark.parametrize("as_path", [False, True], ids=["embedded", "path"])
def test_collator_evaluator_and_segmenter_see_the_same_upright_pixels(tmp_path, as_path):
    from text4seg.eval.evaluate import _load
    from text4seg.infer import segmenter
    from text4seg.protocol.images import load_image
    from text4seg.train.collate import split_record

    record = _saved_record(tmp_path, as_path)
    stored = record["images"][0]  # a path string, or an image datasets decoded
    _, _, (trained,) = split_record(record)
    evaluated, truth = _load(record)
    assert segmenter.load_image is load_image  # Segmenter.segment reads its input with the one reader
    predicted = load_image(stored)
    assert trained.size == evaluated.size == predicted.size == (H, W)  # upright: W tall, H wide
    assert np.array_equal(np.asarray(trained), np.asarray(evaluated))
    assert np.array_equal(np.asarray(trained), np.asarray(predicted))
    red = np.asarray(trained)[..., 0] > 128
    assert (
        red[: W // 2 - 2].all() and not red[W // 2 + 2 :].any()
    )  # the red half is on top, as a viewer shows
    assert truth.mask.shape == (W, H)
