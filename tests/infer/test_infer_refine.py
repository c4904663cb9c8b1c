"""SamRefiner on tiny random SAM and SAM 2 models built from configs (no weights, no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from text4seg.infer.refine import SamRefiner, tiny_sam


def tiny_sam2():
    return tiny_sam("sam2")


BUILDERS = {"sam": tiny_sam, "sam2": tiny_sam2}
PROMPT_SIDE = {"sam": 64, "sam2": 32}  # 4 × (image_size / patch_size)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def built(request):
    model, processor = BUILDERS[request.param]()
    return request.param, model, processor


def _image(seed: int = 0, size=(150, 100)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _grid() -> np.ndarray:
    grid = np.zeros((8, 8), dtype=np.int64)
    grid[2:6, 1:5] = 1
    return grid


class _Counter:
    """Counts forward calls of a module and records the mask prompt the SAM model receives."""

    def __init__(self, model):
        self.encoder_calls = 0
        self.mask_shapes = []
        model.vision_encoder.register_forward_hook(self._encoder)
        model.register_forward_pre_hook(self._model, with_kwargs=True)

    def _encoder(self, *_):
        self.encoder_calls += 1

    def _model(self, _module, _args, kwargs):
        if kwargs.get("input_masks") is not None:
            self.mask_shapes.append(tuple(kwargs["input_masks"].shape))


def test_binary_refinement_shapes_and_mask_prompt_size(built):
    name, model, processor = built
    refiner = SamRefiner(model, processor, device="cpu", iterations=2, min_iou=0.0)
    counter = _Counter(model)
    side = PROMPT_SIDE[name]
    assert refiner.mask_prompt_size == (side, side)
    result = refiner.refine(_image(), _grid())
    assert result.mask.shape == (100, 150) and result.mask.dtype == bool
    assert result.coarse.shape == (100, 150) and result.coarse.any()
    assert counter.mask_shapes == [(1, 1, side, side)] * 2  # coarse prompt, then fed-back logits
    (report,) = result.labels
    assert report.label == 1 and not report.kept_coarse and not result.kept_coarse
    assert 0.0 <= report.iou_with_coarse <= 1.0
    assert report.n_positive == 3 and report.n_negative == 3


def test_embeddings_are_computed_once_per_image(built):
    _, model, processor = built
    refiner = SamRefiner(model, processor, device="cpu", iterations=1)
    counter = _Counter(model)
    other = _grid()
    other[0:2, 6:8] = 1
    first = refiner.refine(_image(1), _grid())
    second = refiner.refine(_image(1), other)  # another object with the same pixels: same cache entry
    third = refiner.refine(_image(2), _grid())
    assert (first.embedding_cached, second.embedding_cached, third.embedding_cached) == (False, True, False)
    assert counter.encoder_calls == 2 and refiner.encoder_calls == 2
    refiner.refine(_image(3), _grid(), key="img-3")
    refiner.refine(_image(4), _grid(), key="img-3")  # an explicit key wins
    assert counter.encoder_calls == 3


def test_guard_keeps_the_coarse_mask(built):
    _, model, processor = built
    image, grid = _image(), _grid()
    strict = SamRefiner(model, processor, device="cpu", iterations=1, min_iou=1.01)
    result = strict.refine(image, grid)
    assert result.kept_coarse and result.labels[0].kept_coarse
    np.testing.assert_array_equal(result.mask, result.coarse)
    lenient = SamRefiner(model, processor, device="cpu", iterations=1, min_iou=0.0)
    assert not lenient.refine(image, grid).kept_coarse


def test_multi_class_grid_is_refined_per_label(built):
    _, model, processor = built
    grid = np.zeros((8, 8), dtype=np.int64)
    grid[1:4, 1:4] = 1
    grid[5:8, 4:8] = 3
    refiner = SamRefiner(model, processor, device="cpu", iterations=2, min_iou=1.01)
    result = refiner.refine(_image(), grid)
    assert [r.label for r in result.labels] == [1, 3]
    assert refiner.decoder_calls == 2 * 2 and refiner.encoder_calls == 1
    assert result.mask.dtype == np.int32 and set(np.unique(result.mask)) <= {0, 1, 3}
    np.testing.assert_array_equal(result.mask, result.coarse)  # guard on every label: coarse label map back
    free = SamRefiner(model, processor, device="cpu", iterations=1, min_iou=0.0).refine(_image(), grid)
    assert set(np.unique(free.mask)) <= {0, 1, 3} and not free.kept_coarse


def test_refinement_is_seeded_and_an_empty_grid_costs_nothing():
    model, processor = tiny_sam()
    a = SamRefiner(model, processor, device="cpu", iterations=1, min_iou=0.0).refine(_image(), _grid())
    b = SamRefiner(model, processor, device="cpu", iterations=1, min_iou=0.0).refine(_image(), _grid())
    np.testing.assert_array_equal(a.mask, b.mask)
    refiner = SamRefiner(model, processor, device="cpu")
    empty = refiner.refine(_image(), np.zeros((8, 8), dtype=np.int64))
    assert not empty.mask.any() and empty.labels == [] and refiner.encoder_calls == 0


def test_points_fall_inside_and_outside_the_coarse_cells():
    model, processor = tiny_sam()
    refiner = SamRefiner(model, processor, device="cpu", n_positive=5, n_negative=5)
    grid = _grid().astype(bool)
    xy, labels = refiner._sample_points(grid, 1, (100, 150))
    cols = (xy[:, 0] * 8 / 150).astype(int)
    rows = (xy[:, 1] * 8 / 100).astype(int)
    assert grid[rows[labels == 1], cols[labels == 1]].all()
    assert not grid[rows[labels == 0], cols[labels == 0]].any()
    # a 4×4 block has 4 interior cells; near it (one cell around), 4 background cells have no foreground neighbour
    assert labels.sum() == 4 and (labels == 0).sum() == 4


def test_refine_mask_and_bad_inputs():
    model, processor = tiny_sam()
    refiner = SamRefiner(model, processor, device="cpu", iterations=1, min_iou=1.01)
    mask = np.zeros((100, 150), dtype=bool)
    mask[20:70, 30:90] = True
    result = refiner.refine_mask(_image(), mask)
    np.testing.assert_array_equal(result.mask, mask)
    with pytest.raises(ValueError, match="image size"):
        refiner.refine(_image(), _grid(), coarse=np.zeros((5, 5), bool))
    with pytest.raises(TypeError, match="SamModel"):
        SamRefiner(torch.nn.Linear(2, 2), processor)
