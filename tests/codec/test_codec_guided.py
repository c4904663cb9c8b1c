"""Image-guided upsampling (`method="guided"`): follows image edges, label maps, errors, speed."""

import time

import numpy as np
import pytest
from PIL import Image

import text4seg as t4s
from text4seg.codec import grid_to_mask, mask_to_grid
from text4seg.codec.guided import _inverse_covariance, as_guide


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _scene(h: int = 160, w: int = 160, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image of a rectangle and a disc (label 1, 2) whose edges lie mid-cell for a 16×16 grid."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    labels = np.zeros((h, w), np.int32)
    labels[35:95, 25:75] = 1  # cells are 10 px: every edge at 5 px into a cell
    labels[(yy - 110) ** 2 + (xx - 115) ** 2 <= 33**2] = 2
    colours = np.array([[90, 110, 100], [200, 60, 50], [40, 70, 190]], np.float32)
    image = colours[labels] + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), labels


def test_guided_follows_an_edge_that_lies_mid_cell():
    image, labels = _scene()
    truth = labels == 1
    grid = mask_to_grid(truth, 16).astype(np.int32)
    bilinear = grid_to_mask(grid, truth.shape, "bilinear")
    guided = grid_to_mask(grid, truth.shape, "guided", image=image)
    assert guided.dtype == bool and guided.shape == truth.shape
    assert _iou(guided, truth) > _iou(bilinear, truth) + 0.15  # measured 0.91 against 0.71
    ys, xs = np.nonzero(guided[40:90, :80])  # the left edge, away from the corners: truth at x = 25
    assert abs(xs.reshape(-1)[np.r_[0, np.flatnonzero(np.diff(ys)) + 1]].mean() - 25) < 2


def test_guided_label_maps_with_several_labels():
    image, labels = _scene()
    grid = t4s.codec.label_map_to_grid(labels, 16)
    out = grid_to_mask(grid, labels.shape, "guided", image=image)
    assert out.dtype == np.int32 and set(np.unique(out)) <= {0, 1, 2}
    bilinear = grid_to_mask(grid, labels.shape, "bilinear")
    assert (out == labels).mean() > (bilinear == labels).mean()
    for value in (1, 2):
        assert _iou(out == value, labels == value) > 0.9
    d = t4s.decode(t4s.encode_label_map(labels, ["others", "red box", "blue disc"]))
    np.testing.assert_array_equal(d.to_mask(labels.shape, "guided", image=image), out)
    assert _iou(d.mask(labels.shape, "blue disc", "guided", image=image), labels == 2) > 0.9


def test_descriptor_to_mask_guided_accepts_pil_grey_and_rgba_images():
    image, labels = _scene()
    d = t4s.decode(t4s.encode_mask(labels == 1, "red box"))
    colour = d.to_mask(labels.shape, "guided", image=image)
    np.testing.assert_array_equal(d.to_mask(labels.shape, "guided", image=Image.fromarray(image)), colour)
    palette = Image.fromarray(image).quantize(64)
    assert _iou(d.to_mask(labels.shape, "guided", image=palette), colour) > 0.9
    rgba = np.concatenate([image, np.full(labels.shape + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(d.to_mask(labels.shape, "guided", image=rgba), colour)
    grey = np.asarray(Image.fromarray(image).convert("L"))  # the red box has the background's luminance
    disc = t4s.decode(t4s.encode_mask(labels == 2, "blue disc"))  # the blue disc is darker
    bilinear = _iou(disc.to_mask(labels.shape), labels == 2)
    assert _iou(disc.to_mask(labels.shape, "guided", image=grey), labels == 2) > bilinear
    assert d.to_mask(labels.shape, "bilinear", image=image).dtype == bool  # other methods ignore it


def test_guide_of_another_size_is_resized_when_the_aspect_agrees():
    image, labels = _scene(160, 240)
    truth = labels == 1
    grid = mask_to_grid(truth, 16).astype(np.int32)
    half = np.asarray(Image.fromarray(image).resize((120, 80)))
    assert _iou(grid_to_mask(grid, truth.shape, "guided", image=half), truth) > 0.9
    guide, scale = as_guide(half, (160, 240))
    assert guide.shape == (160, 240, 3) and guide.dtype == np.uint8 and scale == 1 / 255
    for dtype, top in ((np.uint16, 65535), (np.int32, 2**31 - 1), (np.float64, 1.0), (bool, 1)):
        guide, scale = as_guide(np.full((4, 6), top, dtype), (4, 6))
        assert guide.shape == (4, 6, 1) and np.allclose(guide * scale, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "needs the image"),
        ({"image": np.zeros((160, 100, 3), np.uint8)}, "aspect ratios differ"),
        ({"image": np.zeros((100, 160, 3), np.uint8)}, "aspect ratios differ"),  # rotated
        ({"image": np.zeros((160, 160, 2), np.uint8)}, "H×W"),
        ({"image": np.zeros((160, 160, 3), np.uint8), "radius": 0}, "positive"),
        ({"image": np.zeros((160, 160, 3), np.uint8), "eps": -1.0}, "positive"),
    ],
)
def test_guided_errors(kwargs, match):
    grid = np.zeros((16, 16), np.int32)
    grid[4:8, 4:8] = 1
    with pytest.raises(ValueError, match=match):
        grid_to_mask(grid, (160, 160), "guided", **kwargs)


def test_flat_image_gives_about_the_bilinear_mask():
    grid = np.zeros((16, 16), np.int32)
    grid[3:11, 4:9] = 1
    flat = np.full((160, 160, 3), 128, np.uint8)
    bilinear = grid_to_mask(grid, (160, 160), "bilinear")
    guided = grid_to_mask(grid, (160, 160), "guided", image=flat)
    assert not (guided & ~bilinear).any() and _iou(guided, bilinear) > 0.85  # blurred: corners rounded


@pytest.mark.parametrize("size", [(1, 1), (5, 300), (16, 16), (7, 9)])
def test_tiny_and_thin_outputs(size):
    grid = np.zeros((16, 16), np.int32)
    grid[:, 8:] = 1
    image = np.random.default_rng(0).integers(0, 256, size=size + (3,), dtype=np.uint8)
    assert grid_to_mask(grid, size, "guided", image=image).shape == size


def test_closed_form_inverse_covariance_matches_numpy():
    rng = np.random.default_rng(0)
    small = [rng.random((5, 7)).astype(np.float32) for _ in range(3)]
    mean = [np.full((5, 7), x.mean(), np.float32) for x in small]
    inverse = _inverse_covariance(small, mean, lambda x: np.full_like(x, x.mean()), 1e-3)
    cov = np.cov(np.stack([x.ravel() for x in small]), bias=True) + 1e-3 * np.eye(3)
    ours = np.array([[inverse[i][j][0, 0] for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(ours, np.linalg.inv(cov), rtol=1e-3)


def test_guided_640x480_is_fast():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    grid = (rng.random((16, 16)) < 0.4).astype(np.int32)
    labels = rng.integers(0, 3, size=(16, 16)).astype(np.int32)
    for g, bound in ((grid, 0.2), (labels, 0.5)):  # about 5 and 12 ms on an idle 2-core machine
        grid_to_mask(g, (480, 640), "guided", image=image)
        best = min(_timed(lambda g=g: grid_to_mask(g, (480, 640), "guided", image=image)) for _ in range(3))
        assert best < bound


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
