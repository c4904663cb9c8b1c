"""The light refiner's net, inputs and files (text4seg.models.light_refiner)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from text4seg.codec import grid_to_mask, mask_to_grid
from text4seg.models.light_refiner import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    LightRefinerConfig,
    LightRefinerError,
    LightRefinerNet,
    load_light_refiner,
    net_input,
    refine_logits,
    save_light_refiner,
    soft_masks,
)

SMALL = LightRefinerConfig(widths=(4, 8, 16), side=48)


def _scene(height: int = 45, width: int = 70) -> tuple[np.ndarray, np.ndarray]:
    """A textured image with a brighter disc, and the disc's 8×8 grid."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:height, :width]
    disc = (ys - height / 2) ** 2 + (xs - width / 3) ** 2 < (height / 3) ** 2
    image = rng.integers(0, 60, (height, width, 3)) + 150 * disc[..., None]
    return image.astype(np.uint8), mask_to_grid(disc, 8).astype(np.int64)


def test_untrained_net_gives_guided_upsampling_exactly():
    image, grid = _scene()
    net = LightRefinerNet(SMALL).eval()
    refined = refine_logits(net, image, grid) >= 0
    guided = grid_to_mask(grid, image.shape[:2], "guided", label=1, image=image)
    assert refined.shape == image.shape[:2]
    assert np.array_equal(refined, guided)


@pytest.mark.parametrize("size", [(45, 70), (33, 33), (70, 21)])
def test_output_has_the_input_size(size):
    image, grid = _scene(*size)
    x = torch.from_numpy(net_input(image, *soft_masks(grid, image), SMALL.side)[None])
    assert x.shape[1] == 5 and max(x.shape[-2:]) == SMALL.side
    assert LightRefinerNet(SMALL)(x).shape == (1, 1, *x.shape[-2:])


def test_save_then_load_gives_the_same_logits(tmp_path):
    image, grid = _scene()
    net = LightRefinerNet(SMALL)
    with torch.no_grad():
        net.head.weight.normal_()
    save_light_refiner(net.eval(), tmp_path / "r", {"steps": 3})
    loaded = load_light_refiner(tmp_path / "r")
    assert loaded.config == SMALL
    assert json.loads((tmp_path / "r" / CONFIG_NAME).read_text())["info"] == {"steps": 3}
    np.testing.assert_allclose(refine_logits(loaded, image, grid), refine_logits(net, image, grid), atol=1e-5)


def test_unreadable_folders_name_the_file(tmp_path):
    with pytest.raises(LightRefinerError, match=CONFIG_NAME):
        load_light_refiner(tmp_path)
    save_light_refiner(LightRefinerNet(SMALL), tmp_path)
    (tmp_path / WEIGHTS_NAME).write_bytes(b"not safetensors")
    with pytest.raises(LightRefinerError, match=WEIGHTS_NAME):
        load_light_refiner(tmp_path)
    (tmp_path / CONFIG_NAME).write_text('{"widths": [3]}')
    with pytest.raises(LightRefinerError, match="multiples of 4"):
        load_light_refiner(tmp_path)


def test_weights_of_another_shape_are_refused(tmp_path):
    save_light_refiner(LightRefinerNet(SMALL), tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, "widths": [8, 16, 32]}))
    with pytest.raises(LightRefinerError, match="not weights of this light refiner"):
        load_light_refiner(tmp_path)
