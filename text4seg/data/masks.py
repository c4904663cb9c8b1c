"""Decode one COCO segmentation (polygons, uncompressed or compressed RLE) into a checked mask.

pycocotools trusts its input: a 4-number polygon is silently read as a box, a polygon vertex far
outside the image is rasterised point by point (one coordinate of 1e8 costs gigabytes), and RLE whose
counts do not add up to the image size makes its decoder read or write out of bounds.
`segmentation_rle` checks each form first and raises `BadAnnotation` with a reason code instead; it
returns compressed RLE, so a builder can keep many annotations and merge them without holding a
full-size mask for each. `decode_segmentation` is the same, decoded.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from text4seg.protocol.records import encode_counts  # noqa: F401  (moved; re-exported for old imports)


class BadAnnotation(ValueError):
    """A segmentation that cannot be turned into a mask; ``reason`` is a short code for the report."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode_rle(rle: Any) -> np.ndarray:
    """pycocotools decode, without its NumPy 2 ``copy`` DeprecationWarning on every call."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_PLAIN_NUMBERS = frozenset({int, float})


def _numbers(values: list | tuple) -> bool:
    """Whether every value is a finite int or float (not a bool): `_is_number` for each, with a
    quicker route when every value is exactly an int or a float."""
    if set(map(type, values)) <= _PLAIN_NUMBERS:
        return all(map(math.isfinite, values))
    return all(_is_number(v) for v in values)


def rle_string_counts(counts: bytes) -> list[int]:
    """Run lengths of a COCO compressed-RLE string (the LEB128-like code pycocotools writes)."""
    out: list[int] = []
    pos = 0
    while pos < len(counts):
        value = shift = 0
        more = True
        while more:
            if pos >= len(counts):
                raise BadAnnotation("bad_rle", "compressed RLE string ends inside a number")
            char = counts[pos] - 48
            if not 0 <= char < 64:
                raise BadAnnotation("bad_rle", f"invalid character {chr(counts[pos])!r} in compressed RLE")
            value |= (char & 0x1F) << (5 * shift)
            more = bool(char & 0x20)
            pos += 1
            shift += 1
            if not more and char & 0x10:
                value |= -1 << (5 * shift)
        if len(out) > 2:
            value += out[-2]
        if value < 0:
            raise BadAnnotation("bad_rle", "compressed RLE has a negative run length")
        out.append(value)
    return out


POLYGON_MARGIN = 0.1
"""How far outside the image a polygon vertex may lie, as a fraction of the image side (plus 2 px);
COCO has vertices a pixel or two outside, never more."""


def _check_inside(polygon: list[float], k: int, height: int, width: int) -> None:
    """`BadAnnotation` unless every vertex lies within the margin around the image."""
    xs, ys = polygon[0::2], polygon[1::2]
    mx, my = POLYGON_MARGIN * width + 2, POLYGON_MARGIN * height + 2
    if min(xs) < -mx or max(xs) > width + mx or min(ys) < -my or max(ys) > height + my:
        raise BadAnnotation(
            "polygon_out_of_image",
            f"polygon {k} spans x {min(xs):g}..{max(xs):g}, y {min(ys):g}..{max(ys):g}, "
            f"outside the {width}x{height} image",
        )


def _polygons(segmentation: list, height: int, width: int, dropped: list[str] | None) -> dict:
    if not segmentation:
        raise BadAnnotation("empty_mask", "segmentation is an empty polygon list")
    polygons, small = [], []
    for k, polygon in enumerate(segmentation):
        if not isinstance(polygon, (list, tuple)) or not _numbers(polygon):
            raise BadAnnotation("bad_polygon", f"polygon {k} is not a list of finite numbers")
        if len(polygon) % 2:
            raise BadAnnotation(
                "bad_polygon", f"polygon {k} has an odd number of coordinates ({len(polygon)})"
            )
        if len(polygon) < 6:
            small.append(f"polygon {k} has {len(polygon) // 2} points (< 3)")
            continue
        polygon = list(map(float, polygon))
        _check_inside(polygon, k, height, width)
        polygons.append(polygon)
    if not polygons:
        raise BadAnnotation("polygon_too_small", "; ".join(small))
    if dropped is not None:
        dropped.extend(small)
    rles = mask_utils.frPyObjects(polygons, height, width)
    return rles[0] if len(rles) == 1 else mask_utils.merge(rles)


def _rle(segmentation: dict, height: int, width: int) -> dict:
    size = segmentation.get("size")
    counts = segmentation.get("counts")
    if not isinstance(size, (list, tuple)) or len(size) != 2 or [*size] != [height, width]:
        raise BadAnnotation(
            "rle_size_mismatch", f"RLE size {size} differs from the image size [{height}, {width}]"
        )
    if isinstance(counts, list):
        if not _non_negative_ints(counts):
            raise BadAnnotation("bad_rle", "uncompressed RLE counts must be non-negative integers")
        total = sum(counts)
        if total != height * width:
            raise BadAnnotation(
                "bad_rle", f"uncompressed RLE covers {total} pixels, the image has {height * width}"
            )
        return _canonical_rle(counts, height, width)
    if isinstance(counts, (str, bytes)):
        raw = counts.encode("ascii", "replace") if isinstance(counts, str) else counts
        runs = checked_string_runs(raw)
        total = sum(runs)
        if total != height * width:
            raise BadAnnotation(
                "bad_rle", f"compressed RLE covers {total} pixels, the image has {height * width}"
            )
        return _canonical_rle(runs, height, width)
    raise BadAnnotation("bad_rle", f"RLE counts of type {type(counts).__name__}")


def _non_negative_ints(counts: list) -> bool:
    if set(map(type, counts)) <= {int}:
        return not counts or min(counts) >= 0
    return all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts)


MAX_RLE_DIGITS = 6
"""Most characters in one number of a compressed-RLE string that `checked_string_runs` decodes with
numpy (30 bits, so no sum of them overflows int64; a 10,000 x 10,000 mask needs 6); longer numbers
go through `rle_string_counts`."""


def checked_string_runs(counts: bytes) -> list[int]:
    """`rle_string_counts` (same values, same `BadAnnotation` for a bad string), vectorised: a string
    that the numpy route finds anything wrong with (bad character, unfinished or overlong number,
    negative run) is decoded again by `rle_string_counts` to say what, where it does."""
    digits = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if not digits.size or not 0 <= digits.min() <= digits.max() < 64 or digits[-1] & 0x20:
        return rle_string_counts(counts)  # to say what is wrong
    starts, lengths = _numbers_of(digits)
    if lengths.max() <= MAX_RLE_DIGITS:
        runs = _digit_runs(digits, starts, lengths)
        if runs.min() >= 0:
            return runs.tolist()
    return rle_string_counts(counts)


def _canonical_rle(runs: list[int], height: int, width: int) -> dict:
    """Compressed RLE of ``runs`` written the way pycocotools encodes a decoded mask: no empty run
    but a leading background one, so its ``counts`` are byte-identical to ``encode(decode(rle))``."""
    if 0 not in runs[1:]:  # already canonical: a leading run (maybe empty) and no other empty one
        return mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    merged: list[int] = [0]
    value = 0
    for k, run in enumerate(runs):
        if run == 0:
            continue
        if k % 2 != value:
            merged.append(0)
            value = k % 2
        merged[-1] += run
    return mask_utils.frPyObjects({"size": [height, width], "counts": merged}, height, width)


def segmentation_rle(segmentation: Any, height: int, width: int, dropped: list[str] | None = None) -> dict:
    """COCO ``segmentation`` (polygon list, uncompressed RLE or compressed RLE) -> checked compressed RLE.

    A polygon part of fewer than 3 points is left out when other parts remain (COCO has a few such
    slivers); each one left out is described in ``dropped`` when a list is given. Raises
    `BadAnnotation` when every part is that small, for a vertex outside the image (beyond
    `POLYGON_MARGIN`), for RLE of another size or whose runs do not cover the image, malformed
    values, and masks with no foreground pixel.
    """
    if isinstance(segmentation, list):
        rle = _polygons(segmentation, height, width, dropped)
    elif isinstance(segmentation, dict):
        rle = _rle(segmentation, height, width)
    else:
        raise BadAnnotation("bad_segmentation", f"segmentation of type {type(segmentation).__name__}")
    if not int(mask_utils.area(rle)):
        raise BadAnnotation("empty_mask", "the segmentation covers no pixel")
    return rle


def decode_segmentation(
    segmentation: Any, height: int, width: int, dropped: list[str] | None = None
) -> np.ndarray:
    """`segmentation_rle`, decoded: a bool H×W mask (Fortran order)."""
    return decode_rle(segmentation_rle(segmentation, height, width, dropped)).astype(bool)


def merged_mask(rles: list[dict], height: int, width: int) -> np.ndarray:
    """The union of compressed RLEs as a bool H×W mask (all False when there are none)."""
    if not rles:
        return np.zeros((height, width), dtype=bool, order="F")
    rle = rles[0] if len(rles) == 1 else mask_utils.merge(rles, intersect=False)
    return decode_rle(rle).astype(bool)


def union_rle(rles: list[dict], height: int, width: int) -> dict:
    """The union of canonical compressed RLEs (from `segmentation_rle`), still compressed and canonical:
    its ``counts`` equal those `encode_counts` writes for the decoded union."""
    if not rles:
        return mask_utils.frPyObjects({"size": [height, width], "counts": [height * width]}, height, width)
    return rles[0] if len(rles) == 1 else mask_utils.merge(rles, intersect=False)


def rle_runs(counts: bytes) -> np.ndarray:
    """Run lengths of a compressed-RLE string written by pycocotools (vectorised `rle_string_counts`,
    for trusted strings: no checks)."""
    digits = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    return _digit_runs(digits, *_numbers_of(digits))


def _numbers_of(digits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first character, character count) of each number of a compressed-RLE string given as its
    characters' values (char - 48): a number ends at a character without the 0x20 bit."""
    ends = np.flatnonzero((digits & 0x20) == 0)
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    return starts, ends - starts + 1


def _raw_values(digits: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The numbers of a compressed-RLE string as written, from its characters' values and
    `_numbers_of`: 5 bits per character, least significant first, the last character's 5 bits signed."""
    position = np.arange(digits.size) - np.repeat(starts, lengths)
    bits = (digits & 0x1F) - ((digits & 0x30) == 0x10) * 32  # the sign bit counts only in a last character
    return np.add.reduceat(bits << (5 * position), starts)


def _digit_runs(digits: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The run lengths of a compressed-RLE string from its characters' values and `_numbers_of`."""
    values = _raw_values(digits, starts, lengths)
    for first in (1, 2):  # from the 4th number on, each is stored as its difference to the one 2 before
        values[first::2] = np.cumsum(values[first::2])
    return values


def sample_rle(rle: dict, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``decode(rle)[np.ix_(rows, cols)]`` as bool, without decoding the whole mask."""
    return sample_rle_at(rle, column_major_pixels(rle["size"][0], rows, cols))


def column_major_pixels(height: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The column-major (RLE) index of each pixel ``(rows[i], cols[j])`` of an image ``height`` high,
    shaped ``(len(rows), len(cols))``."""
    return cols[None, :].astype(np.int64) * height + rows[:, None]


def sample_rle_at(rle: dict, pixels: np.ndarray) -> np.ndarray:
    """`sample_rle` at pixels given by their `column_major_pixels` index (computed once per image
    size by a caller sampling many masks)."""
    ends = np.cumsum(rle_runs(rle["counts"]))
    return np.searchsorted(ends, pixels, side="right") % 2 == 1


def sample_many(rles: list[dict], pixels: list[np.ndarray]) -> list[np.ndarray]:
    """``[sample_rle_at(rle, p) for rle, p in zip(rles, pixels)]`` with every counts string decoded in
    one numpy pass (numpy's per-call cost, not the strings' length, is most of one mask's sampling).
    The strings must be pycocotools' (checked or made by it): each one's runs cover its image."""
    if len(rles) < 2:
        return [sample_rle_at(rle, p) for rle, p in zip(rles, pixels, strict=True)]
    joined = b"".join(rle["counts"] for rle in rles)
    digits = np.frombuffer(joined, dtype=np.uint8).astype(np.int64) - 48
    starts, lengths = _numbers_of(digits)
    char_ends = np.cumsum([len(rle["counts"]) for rle in rles])
    first = np.searchsorted(starts, np.concatenate([[0], char_ends[:-1]]))  # each string's first number
    local = np.arange(starts.size) - np.repeat(first, np.diff(np.append(first, starts.size)))
    runs = _raw_values(digits, starts, lengths)
    for parity in (1, 0):  # the difference rule, within each string: number j adds number j - 2's value
        _segmented_cumsum(runs, np.flatnonzero((local % 2 == parity) & (local > 0)), first)
    ends = np.cumsum(runs)
    offsets = np.concatenate([[0], ends[first[1:] - 1]])  # pixels before each string's image
    queries = np.concatenate([p.ravel() + o for p, o in zip(pixels, offsets, strict=True)])
    sizes = [p.size for p in pixels]
    bits = (np.searchsorted(ends, queries, "right") - np.repeat(first, sizes)) % 2 == 1
    parts = np.split(bits, np.cumsum(sizes[:-1]))
    return [part.reshape(p.shape) for part, p in zip(parts, pixels, strict=True)]


def _segmented_cumsum(values: np.ndarray, picked: np.ndarray, first: np.ndarray) -> None:
    """Replace ``values[picked]`` by their running sums, restarting at each string (``first``: the
    index of each string's first value; ``picked`` ascending)."""
    sums = np.cumsum(values[picked])
    group = np.searchsorted(first, picked, "right") - 1
    new = np.flatnonzero(np.diff(group, prepend=-1))  # where a string's picked values start
    before = np.where(new > 0, sums[np.maximum(new - 1, 0)], 0)
    values[picked] = sums - np.repeat(before, np.diff(np.append(new, picked.size)))


def rle_box(rle: dict) -> list[float]:
    """Tight box ``[x0, y0, x1, y1]`` (x1, y1 exclusive) of an RLE mask, ``[]`` when it is empty."""
    if not int(mask_utils.area(rle)):
        return []
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return [x, y, x + w, y + h]


_AREA_BATCH = 255
"""Most RLEs per `mask_utils.area` call: pycocotools makes a uint8 array of the count first, which
numpy 2 refuses for 256 or more."""


def rle_boxes(rles: list[dict]) -> list[list[float]]:
    """``[rle_box(rle) for rle in rles]`` in two pycocotools calls per `_AREA_BATCH` masks."""
    areas, boxes = [], []
    for start in range(0, len(rles), _AREA_BATCH):
        part = rles[start : start + _AREA_BATCH]
        areas += mask_utils.area(part).tolist()
        boxes += mask_utils.toBbox(part).tolist()
    return [[x, y, x + w, y + h] if area else [] for area, (x, y, w, h) in zip(areas, boxes, strict=True)]
