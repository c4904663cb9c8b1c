"""Checked decoding of COCO segmentations, against pycocotools."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from text4seg.data.masks import (
    BadAnnotation,
    checked_string_runs,
    column_major_pixels,
    decode_segmentation,
    encode_counts,
    merged_mask,
    rle_box,
    rle_boxes,
    rle_runs,
    rle_string_counts,
    sample_many,
    sample_rle,
    sample_rle_at,
    segmentation_rle,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

H, W = 30, 40


def _mask() -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[5:20, 8:30] = True
    mask[0, 0] = True
    return mask


def test_three_encodings_decode_like_pycocotools():
    mask = _mask()
    counts = encode_counts(mask)
    assert np.array_equal(decode_segmentation({"size": [H, W], "counts": counts}, H, W), mask)
    flat = mask.reshape(-1, order="F").astype(int)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[-1, flat, -1]))).tolist()
    assert np.array_equal(decode_segmentation({"size": [H, W], "counts": [0, *runs]}, H, W), mask)
    polygon = [[8.0, 5.0, 30.0, 5.0, 30.0, 20.0, 8.0, 20.0]]
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, H, W))).astype(bool)
    assert np.array_equal(decode_segmentation(polygon, H, W), expected)


def test_string_counts_parser_matches_pycocotools():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random((H, W)) < rng.random()
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        counts = rle_string_counts(rle["counts"])
        assert sum(counts) == H * W
        assert sum(counts[1::2]) == int(mask.sum())


@pytest.mark.parametrize(
    ("segmentation", "reason"),
    [
        ([[1.0, 1.0, 10.0, 10.0]], "polygon_too_small"),
        ([[1.0, 1.0, 10.0]], "bad_polygon"),
        ([[1.0, 1.0, float("nan"), 3.0, 4.0, 5.0]], "bad_polygon"),
        ([[1.0, 1.0, float("inf"), 3.0, 4.0, 5.0]], "bad_polygon"),
        ([[10.0, 10.0, 1e8, 10.0, 40.0, 30.0]], "polygon_out_of_image"),
        ([[10.0, 10.0, 20.0, -1e6, 40.0, 30.0]], "polygon_out_of_image"),
        ([], "empty_mask"),
        ({"size": [H + 1, W], "counts": [H * W]}, "rle_size_mismatch"),
        ({"size": [H, W], "counts": [H * W - 5, 3]}, "bad_rle"),
        ({"size": [H, W], "counts": "0"}, "bad_rle"),
        ({"size": [H, W], "counts": [H * W]}, "empty_mask"),
        ("nonsense", "bad_segmentation"),
    ],
)
def test_bad_segmentations_are_refused_with_a_reason(segmentation, reason):
    with pytest.raises(BadAnnotation) as info:
        decode_segmentation(segmentation, H, W)
    assert info.value.reason == reason


def test_a_sliver_part_is_left_out_when_other_parts_remain():
    square = [2.0, 2.0, 12.0, 2.0, 12.0, 12.0, 2.0, 12.0]
    dropped: list[str] = []
    mask = decode_segmentation([square, [30.0, 30.0, 31.0, 31.0]], H, W, dropped)
    assert np.array_equal(mask, decode_segmentation([square], H, W))
    assert dropped == ["polygon 1 has 2 points (< 3)"]
    with pytest.raises(BadAnnotation, match="polygon 0 has 2 points.*polygon 1 has 1 points"):
        decode_segmentation([[1.0, 1.0, 5.0, 5.0], [3.0, 3.0]], H, W)


def test_vertices_a_little_outside_the_image_are_kept():
    # COCO has vertices a pixel or so past the border; they are clipped by rasterisation, not refused
    mask = decode_segmentation([[-1.5, -1.0, W + 1.5, -1.0, W + 1.5, H + 1.0]], H, W)
    assert mask.any()


def test_refused_far_polygon_costs_nothing():
    # pycocotools would rasterise ~5e8 points for this one annotation (gigabytes); the check runs first
    with pytest.raises(BadAnnotation, match="polygon 0 spans x 10..1e\\+08"):
        segmentation_rle([[10, 10, 1e8, 10, 40, 30]], 48, 64)


def test_rle_form_merges_like_the_decoded_masks():
    square = [[2.0, 2.0, 12.0, 2.0, 12.0, 12.0, 2.0, 12.0]]
    other = {"size": [H, W], "counts": encode_counts(_mask())}
    rles = [segmentation_rle(square, H, W), segmentation_rle(other, H, W)]
    union = decode_segmentation(square, H, W) | decode_segmentation(other, H, W)
    assert np.array_equal(merged_mask(rles, H, W), union)
    assert not merged_mask([], H, W).any() and merged_mask([], H, W).shape == (H, W)


def test_vectorised_run_parser_and_cell_sampling_match_pycocotools():
    rng = np.random.default_rng(7)
    mask = rng.random((H, W)) < 0.4
    mask[:, 20:] = True  # long runs: numbers of several characters
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle_runs(rle["counts"]).tolist() == rle_string_counts(rle["counts"])
    rows, cols = np.array([0, 7, 29]), np.array([0, 13, 21, 39])
    assert np.array_equal(sample_rle(rle, rows, cols), mask[np.ix_(rows, cols)])


def _detail(parse, counts: bytes) -> str | list[int]:
    try:
        return parse(counts)
    except BadAnnotation as err:
        return f"{err.reason}: {err.detail}"


def test_checked_string_parser_equals_the_plain_one():
    """The vectorised, checked parser gives the same runs, or the same complaint, as the loop."""
    rng = np.random.default_rng(3)
    strings = []
    for shape in [(H, W), (480, 640), (3000, 4000)]:  # numbers of 1 to 5 characters
        mask = rng.random(shape) < 0.5
        mask[:, shape[1] // 2 :] = rng.random() < 0.5
        strings.append(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"])
    good = strings[0]
    strings += [
        b"",
        good + b"\x7f",  # a character out of the code
        good[:-1] + b"o",  # ends inside a number (0x20 bit set on the last character)
        b"0" + b"`" * 6 + b"0" + b"1",  # an overlong (7-character) number: the loop decides
        b"1" + b"2" + b"3" + b"X",  # a negative run
        b" abc",
    ]
    for counts in strings:
        assert _detail(checked_string_runs, counts) == _detail(rle_string_counts, counts), counts[:20]


@pytest.mark.parametrize(
    "counts",
    [
        [0, 5, H * W - 5],
        [3, 0, 2, 4, H * W - 9],
        [0, 0, 5, H * W - 5],
        [H * W - 1, 1],
        [2, 1, 0, 0, 1, H * W - 4],
    ],
)
def test_uncompressed_rle_with_empty_runs_is_written_canonically(counts):
    rle = segmentation_rle({"size": [H, W], "counts": counts}, H, W)
    decoded = mask_utils.decode(rle)
    assert rle["counts"] == mask_utils.encode(np.asfortranarray(decoded))["counts"]
    flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.uint8)
    assert np.array_equal(decoded.reshape(-1, order="F"), flat)


def test_polygon_values_of_other_number_types():
    base = [2.0, 2.0, 12.0, 2.0, 12.0, 12.0]
    as_numpy = [np.float64(v) for v in base]  # a float subclass: accepted, like a float
    assert np.array_equal(decode_segmentation([as_numpy], H, W), decode_segmentation([base], H, W))
    for bad in [True, "2", None, np.float32(2.0)]:
        with pytest.raises(BadAnnotation) as info:
            decode_segmentation([[bad, *base[1:]]], H, W)
        assert info.value.reason == "bad_polygon"


def test_masks_sampled_together_equal_masks_sampled_one_by_one():
    """One pass (boxes: one call) over many masks of several sizes (empty, full, a leading foreground pixel, long runs)
    samples each exactly as alone, and as the decoded mask."""
    rng = np.random.default_rng(11)
    rles, pixels, expected = [], [], []
    for k in range(60):
        height, width = (int(v) for v in rng.integers(1, 80, 2))
        mask = rng.random((height, width)) < rng.random()
        mask[:, : width // 3] = k % 2 == 0  # long runs: numbers of several characters
        mask[:] = False if k % 7 == 0 else (True if k % 11 == 0 else mask)
        mask[0, 0] = mask[0, 0] or k % 5 == 0
        rows, cols = rng.integers(0, height, 6), rng.integers(0, width, 4)
        rles.append(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8))))
        pixels.append(column_major_pixels(height, rows, cols))
        expected.append(mask[np.ix_(rows, cols)])
    together = sample_many(rles, pixels)
    assert len(together) == len(rles)
    for got, want, rle, where in zip(together, expected, rles, pixels, strict=True):
        assert np.array_equal(got, want) and np.array_equal(sample_rle_at(rle, where), want)
    assert np.array_equal(sample_many(rles[:1], pixels[:1])[0], expected[0])
    assert rle_boxes(rles) == [rle_box(rle) for rle in rles] and rle_boxes([]) == []
    many = rles * 9  # more than pycocotools' area() takes at once
    assert rle_boxes(many) == [rle_box(rle) for rle in many]
