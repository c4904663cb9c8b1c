"""Image-guided upsampling of a label grid: each label's bilinear soft map is filtered by the guided
filter (He, Sun & Tang, ECCV 2010) with the image as guide, so outlines follow the image's edges
rather than lines between cell centres.

The filter runs in its fast form (He & Sun 2015): its local linear models are fitted on a copy of
the image `GUIDED_CELL_PIXELS` pixels per cell across, then upsampled and applied to the full-size
image, so the cost is a few box filters on a small image plus one multiply-add per output pixel.
Colour images are used as colour guides (3×3 local covariances), grey images as grey guides (which
score about 8 cIoU points lower in bench/results/upsample.md: pass the colour image when there is one).

OpenCV (a dependency of text4seg) does the box filters and resizing; it is imported on first use,
so importing the codec still loads only numpy and the standard library.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

GUIDED_RADIUS = 1.25
"""Window radius of the guided filter, in grid cells. Chosen on the tune split of
bench/bench_upsample.py among 0.5-2 cells (1.0-1.5 score within half a cIoU point of each other)."""

GUIDED_EPS = 3e-5
"""Regularisation of the guided filter, in squared intensity (intensities scaled to [0, 1]): the
larger, the stronger an edge must be to be followed. Chosen on the tune split of
bench/bench_upsample.py among 3e-6-0.1: the largest within 0.1 cIoU points of the best (3e-6); 1e-4
scores 0.2 points lower, 1e-2 four points lower."""

GUIDED_CELL_PIXELS = 4
"""Pixels per grid cell of the small image on which the filter's linear models are fitted: 4 scored
0.2 cIoU points above 8 on the tune split of bench/bench_upsample.py (6-16 within 0.2 of 8), and costs
a quarter of the box filtering."""

ASPECT_TOLERANCE = 0.02
"""A guide image of another size than the mask is resized to it when their aspect ratios agree within
this fraction; otherwise it is taken for the wrong image (or a rotated one) and refused."""


_PIL_MODES_TO_RGB = frozenset({"1", "P", "PA", "LA", "CMYK", "YCbCr", "LAB", "HSV"})


def as_guide(image: Any, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """`(guide, scale)`: the image as an H×W×C array (C = 1 or 3) at `size = (height, width)`, uint8,
    uint16 or float32, and the factor that brings its values to [0, 1].

    Accepts an H×W, H×W×1, H×W×3 or H×W×4 (alpha dropped) array, or anything `np.asarray` turns into
    one (a PIL image; palette, CMYK and other modes are converted to RGB first). Integer images are
    scaled by their dtype's maximum, floats taken as [0, 1]. A guide of another size is resized to
    `size` when the aspect ratios agree (`ASPECT_TOLERANCE`), else refused with a ValueError, as it
    cannot be the image the mask is for.
    """
    import cv2

    if getattr(image, "mode", None) in _PIL_MODES_TO_RGB:  # a PIL image whose values are not intensities
        image = image.convert("RGB")
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] in (1, 3, 4):
        array = array[..., :3] if array.shape[2] == 4 else array
    elif array.ndim != 2:
        raise ValueError(f"image must be H×W or H×W×(1, 3 or 4), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"image must not be empty, got shape {array.shape}")
    array, scale = _native(array)
    height, width = size
    if array.shape[:2] != (height, width):
        ratio = (array.shape[1] / array.shape[0]) / (width / height)
        if abs(ratio - 1) > ASPECT_TOLERANCE:
            raise ValueError(
                f"image of {array.shape[0]}×{array.shape[1]} pixels cannot guide a {height}×{width} mask: "
                "the aspect ratios differ (the wrong image, or a rotated one?)"
            )
        shrink = array.shape[0] * array.shape[1] > height * width
        interpolation = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        array = cv2.resize(array, (width, height), interpolation=interpolation)
    return array.reshape(height, width, -1), scale


def _native(array: np.ndarray) -> tuple[np.ndarray, float]:
    """The image in a dtype OpenCV resizes (uint8, uint16 or float32) and its scale to [0, 1]."""
    if array.dtype == bool:
        return array.astype(np.uint8), 1.0
    if array.dtype in (np.uint8, np.uint16):
        return np.ascontiguousarray(array), 1.0 / np.iinfo(array.dtype).max
    if array.dtype.kind in "iu":
        return np.multiply(array, 1.0 / np.iinfo(array.dtype).max, dtype=np.float32), 1.0
    return np.ascontiguousarray(array, dtype=np.float32), 1.0


class _GuideModel:
    """The guide's share of the guided filter: its full-size channels, its small copy's channels, their
    local means and the inverses of their local covariances (plus `eps`), shared by every label."""

    def __init__(self, guide: np.ndarray, scale: float, low: tuple[int, int], radius: int, eps: float):
        import cv2

        self.radius, self.scale = radius, scale
        self.size = guide.shape[:2]
        self.planes = cv2.split(guide) if guide.shape[2] > 1 else [guide[..., 0]]
        small = cv2.resize(guide, (low[1], low[0]), interpolation=cv2.INTER_AREA).reshape(low + (-1,))
        small = np.multiply(small, np.float32(scale), dtype=np.float32)
        self.small = [np.ascontiguousarray(small[..., c]) for c in range(small.shape[2])]
        self.mean = [self.box(x) for x in self.small]
        self.inverse = _inverse_covariance(self.small, self.mean, self.box, eps)

    def box(self, x: np.ndarray) -> np.ndarray:
        """Mean over the (2r+1)² window around each pixel, reflected at the border."""
        import cv2

        side = 2 * self.radius + 1
        return cv2.boxFilter(x, -1, (side, side), borderType=cv2.BORDER_REFLECT)

    def filter(self, soft_small: np.ndarray) -> np.ndarray:
        """The guided filter's output at full size for a soft map given at the small size."""
        import cv2

        mean_p = self.box(soft_small)
        cov = [self.box(x * soft_small) - m * mean_p for x, m in zip(self.small, self.mean, strict=True)]
        a = [sum(row[j] * cov[j] for j in range(len(cov))) for row in self.inverse]
        b = mean_p - sum(ai * m for ai, m in zip(a, self.mean, strict=True))
        full = (self.size[1], self.size[0])
        out = cv2.resize(self.box(b), full)
        for ai, plane in zip(a, self.planes, strict=True):  # the scale to [0, 1] goes on a, not the image
            out += cv2.resize(self.box(ai) * np.float32(self.scale), full) * plane
        return out


def _inverse_covariance(
    small: list[np.ndarray], mean: list[np.ndarray], box: Any, eps: float
) -> list[list[np.ndarray]]:
    """Per-pixel inverse of the guide's local covariance plus `eps`·Id, as a C×C nest of arrays (C = 1
    or 3; closed form, as numpy's batched inverse is ten times slower on 3×3 blocks)."""
    n = len(small)
    s = [[None] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            s[i][j] = s[j][i] = (
                box(small[i] * small[j]) - mean[i] * mean[j] + (np.float32(eps) if i == j else 0)
            )
    if n == 1:
        return [[1.0 / s[0][0]]]
    adj = [
        [
            s[(j + 1) % 3][(i + 1) % 3] * s[(j + 2) % 3][(i + 2) % 3]
            - s[(j + 1) % 3][(i + 2) % 3] * s[(j + 2) % 3][(i + 1) % 3]
            for j in range(3)
        ]
        for i in range(3)
    ]
    det = s[0][0] * adj[0][0] + s[0][1] * adj[1][0] + s[0][2] * adj[2][0]
    return [[adj[i][j] / det for j in range(3)] for i in range(3)]


def _soft_maps(
    grid: np.ndarray, values: np.ndarray, low: tuple[int, int]
) -> Iterator[tuple[int, np.ndarray]]:
    """Each value's indicator over the grid, bilinearly interpolated to the small size."""
    from .grid import _bilinear_weights

    wy, wx = _bilinear_weights(low[0], grid.shape[0]), _bilinear_weights(low[1], grid.shape[1])
    for value in values:
        yield int(value), wy @ (grid == value).astype(np.float32) @ wx.T


def guided_scores(
    grid: np.ndarray,
    image: Any,
    size: tuple[int, int],
    values: np.ndarray,
    radius: float = GUIDED_RADIUS,
    eps: float = GUIDED_EPS,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(value, H×W float32 score)` for each grid value in `values`: its bilinear indicator after
    the guided filter with `image` as guide. Scores of all values present sum to 1 at every pixel."""
    if radius <= 0 or eps <= 0:
        raise ValueError(f"radius and eps must be positive, got radius={radius!r}, eps={eps!r}")
    guide, scale = as_guide(image, size)
    rows, cols = grid.shape
    low = (min(rows * GUIDED_CELL_PIXELS, size[0]), min(cols * GUIDED_CELL_PIXELS, size[1]))
    pixels_per_cell = min(low[0] / rows, low[1] / cols)
    model = _GuideModel(guide, scale, low, max(1, round(radius * pixels_per_cell)), eps)
    for value, soft in _soft_maps(grid, values, low):
        yield value, model.filter(soft)
