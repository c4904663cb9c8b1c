"""Pixels <-> label grids: downsampling a mask or label map to g×g cells, and back to image size.

All resampling here is separable and written as small weight matrices, so a 640×480 mask costs two
matrix products; image-guided upsampling (`method="guided"`) lives in `guided.py`. Conventions: a grid is a 2-D integer array, 0 is the background, value v names
`labels[v]`; a box is `(x0, y0, x1, y1)` in pixels with `x1`, `y1` exclusive.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from .format import as_grid_size

DownMethod = Literal["nearest", "area"]
UpMethod = Literal["nearest", "bilinear", "guided"]

DOWN_METHODS: tuple[str, ...] = ("nearest", "area")
UP_METHODS: tuple[str, ...] = ("nearest", "bilinear", "guided")

MAX_PIXELS = 2**27
"""The largest mask or label map (height × width, 134,217,728 pixels: 16384×8192, beyond any photo a
segmenter is given) that `grid_to_mask` and `Descriptor.to_mask` make; a larger size raises ValueError
before anything is allocated. At the limit a bool mask takes 128 MiB and bilinear upsampling a
512 MiB float32 intermediate."""


def as_image_size(size: tuple[int, int]) -> tuple[int, int]:
    """`(height, width)` as ints, refusing non-positive sizes and sizes above `MAX_PIXELS`."""
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    if height * width > MAX_PIXELS:
        raise ValueError(
            f"size {height}×{width} is {height * width:,} pixels, above MAX_PIXELS = {MAX_PIXELS:,}"
        )
    return height, width


def _frozen(array: np.ndarray) -> np.ndarray:
    """Mark a cached array read-only so no caller can corrupt the cache."""
    array.flags.writeable = False
    return array


def _check_2d(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    return array


@lru_cache(maxsize=256)
def nearest_indices(size: int, cells: int) -> np.ndarray:
    """Source index sampled for each of `cells` outputs: the pixel under the cell centre.

    The centre is walked in steps of `size / cells` from half a step, accumulated in float64 exactly as
    PIL's NEAREST resize does, so the cells agree with `Image.resize(..., NEAREST)` (the resize used to
    make Text4Seg's released data) including its rounding at exact half-pixel positions.
    """
    scale = size / cells
    centres = np.cumsum(np.concatenate([[scale * 0.5], np.full(cells - 1, scale)]))
    return _frozen(np.minimum(centres.astype(np.int64), size - 1))


@lru_cache(maxsize=256)
def _area_weights(size: int, cells: int) -> np.ndarray:
    """(cells × size) matrix: row i holds the share of each pixel covered by cell i, normalised to sum 1."""
    edges = np.arange(cells + 1) * (size / cells)
    start = np.arange(size)[None, :]
    overlap = np.clip(np.minimum(start + 1, edges[1:, None]) - np.maximum(start, edges[:-1, None]), 0, None)
    return _frozen((overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32))


def _area_fraction(binary: np.ndarray, rows: int, cols: int) -> np.ndarray:
    height, width = binary.shape
    return _area_weights(height, rows) @ binary.astype(np.float32) @ _area_weights(width, cols).T


def mask_to_grid(
    mask: np.ndarray,
    grid: int | tuple[int, int] = 16,
    method: DownMethod = "nearest",
    threshold: float = 0.5,
) -> np.ndarray:
    """Downsample an H×W mask to a boolean `rows × cols` grid.

    `nearest` samples the pixel under each cell centre (the cells a nearest-neighbour resize gives,
    as in Text4Seg's released data); `area` marks a cell when at least `threshold` of its area is
    foreground, which keeps thin or small objects from vanishing or appearing by chance.
    """
    mask = _check_2d(mask, "mask")
    rows, cols = as_grid_size(grid)
    if method == "nearest":
        return mask[np.ix_(nearest_indices(mask.shape[0], rows), nearest_indices(mask.shape[1], cols))] != 0
    if method == "area":
        return _area_fraction(mask != 0, rows, cols) >= threshold
    raise ValueError(f"unknown downsampling method {method!r}; use one of {DOWN_METHODS}")


def label_map_to_grid(
    label_map: np.ndarray,
    grid: int | tuple[int, int] = 16,
    method: DownMethod = "nearest",
) -> np.ndarray:
    """Downsample an H×W integer label map to a `rows × cols` int32 grid.

    `nearest` samples cell centres; `area` gives each cell the label covering most of its area
    (ties go to the lower label value, so background wins a tie).
    """
    label_map = _check_2d(label_map, "label_map")
    if not np.issubdtype(label_map.dtype, np.integer) and label_map.dtype != bool:
        raise ValueError(f"label_map must hold integers, got dtype {label_map.dtype}")
    if label_map.size and label_map.min() < 0:
        raise ValueError("label_map values must be >= 0")
    rows, cols = as_grid_size(grid)
    if method == "nearest":
        picked = label_map[
            np.ix_(nearest_indices(label_map.shape[0], rows), nearest_indices(label_map.shape[1], cols))
        ]
        return picked.astype(np.int32)
    if method != "area":
        raise ValueError(f"unknown downsampling method {method!r}; use one of {DOWN_METHODS}")
    values = np.unique(label_map)
    scores = np.stack([_area_fraction(label_map == v, rows, cols) for v in values])
    return values[np.argmax(scores, axis=0)].astype(np.int32)


@lru_cache(maxsize=256)
def _bilinear_weights(size: int, cells: int) -> np.ndarray:
    """(size × cells) matrix interpolating cell-centre samples at pixel centres, edges clamped."""
    pos = np.clip((np.arange(size) + 0.5) * cells / size - 0.5, 0, cells - 1)
    low = np.floor(pos).astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    frac = pos - low
    weights = np.zeros((size, cells), dtype=np.float32)
    weights[np.arange(size), low] += 1 - frac
    weights[np.arange(size), high] += frac
    return _frozen(weights)


@lru_cache(maxsize=256)
def _pixels_per_cell(size: int, cells: int) -> np.ndarray:
    """How many output pixels each cell covers: pixel p (centre p + 0.5) belongs to cell floor((p + 0.5) * cells / size)."""
    owner = np.minimum(((np.arange(size) + 0.5) * cells / size).astype(np.int64), cells - 1)
    return _frozen(np.bincount(owner, minlength=cells))


def grid_to_mask(
    grid: np.ndarray,
    size: tuple[int, int],
    method: UpMethod = "bilinear",
    label: int | None = None,
    *,
    image: Any = None,
    radius: float | None = None,
    eps: float | None = None,
) -> np.ndarray:
    """Upsample a grid to an image of `size = (height, width)` (at most `MAX_PIXELS`).

    With `label` given (or a grid holding only 0/1), returns an H×W bool mask; otherwise an H×W
    int32 label map. `nearest` paints each cell as a block; `bilinear` interpolates each label's
    indicator between cell centres and takes the argmax (threshold 0.5 for one label), which gives
    smoother, more accurate outlines than `nearest` (`bench/bench_codec.py`). `guided` filters each
    bilinear indicator with the guided filter, `image` as guide (the H×W×3 or H×W image the mask is
    for, or any array-like such as a PIL image; other methods ignore it), so outlines follow the
    image's edges; `radius` (in cells) and `eps` default to the measured `GUIDED_RADIUS` and
    `GUIDED_EPS` (see `text4seg.codec.guided` and bench/results/upsample.md).
    """
    grid = _check_2d(grid, "grid").astype(np.int64)
    height, width = as_image_size(size)
    if method not in UP_METHODS:
        raise ValueError(f"unknown upsampling method {method!r}; use one of {UP_METHODS}")
    if method == "guided" and image is None:
        raise ValueError("method='guided' needs the image the mask is for: pass image=")
    binary = label is not None or grid.max(initial=0) <= 1
    target = grid == (1 if label is None else label)
    if method == "nearest":
        rows, cols = _pixels_per_cell(height, grid.shape[0]), _pixels_per_cell(width, grid.shape[1])
        source = target if binary else grid.astype(np.int32)
        return np.repeat(np.repeat(source, rows, axis=0), cols, axis=1)
    if binary:
        grid, values = target.astype(np.int64), np.array([1])
    else:
        values = np.unique(grid)
    scores = _scores(grid, (height, width), values, method, image, radius, eps)
    if binary:
        return next(scores)[1] >= 0.5
    return _argmax(scores, (height, width))


def _scores(
    grid: np.ndarray,
    size: tuple[int, int],
    values: np.ndarray,
    method: str,
    image: Any,
    radius: float | None,
    eps: float | None,
) -> Iterator[tuple[int, np.ndarray]]:
    """`(value, H×W score)` per value: its indicator interpolated (bilinear) or also filtered (guided)."""
    if method == "guided":
        from . import guided

        radius = guided.GUIDED_RADIUS if radius is None else radius
        eps = guided.GUIDED_EPS if eps is None else eps
        yield from guided.guided_scores(grid, image, size, values, radius, eps)
        return
    wy, wx = _bilinear_weights(size[0], grid.shape[0]), _bilinear_weights(size[1], grid.shape[1])
    for value in values:
        yield int(value), wy @ ((grid == value).astype(np.float32) @ wx.T)


def _argmax(scores: Iterator[tuple[int, np.ndarray]], size: tuple[int, int]) -> np.ndarray:
    """The value of the highest score at each pixel (the first value on ties), one map in memory at a time."""
    best_value = np.zeros(size, dtype=np.int32)
    best = np.full(size, -np.inf, dtype=np.float32)
    for value, score in scores:
        better = score > best
        best_value[better] = value
        np.maximum(best, score, out=best)
    return best_value


def mask_to_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box `(x0, y0, x1, y1)` of the non-zero pixels (x1, y1 exclusive), or None for an empty mask."""
    mask = _check_2d(mask, "mask") != 0
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
