import numpy as np
import pytest
from PIL import Image

import text4seg as t4s
from text4seg.codec.grid import label_map_to_grid, mask_to_grid


@pytest.mark.parametrize("shape", [(480, 640), (37, 53), (16, 16), (15, 9), (1000, 333)])
@pytest.mark.parametrize("grid", [8, 16, 24, 32, (12, 20)])
def test_nearest_matches_pil_cell_for_cell(shape, grid):
    rng = np.random.default_rng(sum(shape))
    labels = rng.integers(0, 5, size=shape).astype(np.uint8)
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    pil = np.asarray(Image.fromarray(labels).resize((cols, rows), Image.NEAREST))
    np.testing.assert_array_equal(label_map_to_grid(labels, grid, "nearest"), pil)
    np.testing.assert_array_equal(mask_to_grid(labels > 2, grid, "nearest"), pil > 2)


def test_area_method_uses_coverage():
    mask = np.zeros((32, 32), bool)
    mask[:8, :3] = True  # 3/4 of cell (0,0) when g=8 is 4x4 cells... here cell is 4x4: 12/16 covered
    grid = mask_to_grid(mask, 8, "area")
    assert grid[0, 0] and grid[1, 0] and not grid[0, 1]
    thin = np.zeros((32, 32), bool)
    thin[:, 1] = True  # a 1-pixel line covers 1/4 of its cells
    assert not mask_to_grid(thin, 8, "area").any()
    assert mask_to_grid(thin, 8, "area", threshold=0.25)[:, 0].all()


def test_area_label_map_takes_majority():
    lm = np.zeros((10, 10), int)
    lm[:, :6] = 2
    lm[:, 6:] = 1
    assert label_map_to_grid(lm, (1, 2), "area").tolist() == [[2, 1]]
    lm[:, :] = 0
    lm[:5, :] = 3
    assert label_map_to_grid(lm, 1, "area").tolist() == [[0]]  # tie goes to the lower value


def test_area_handles_non_divisible_sizes():
    mask = np.ones((37, 53), bool)
    assert mask_to_grid(mask, 16, "area").all()
    assert not mask_to_grid(~mask, 16, "area").any()


@pytest.mark.parametrize("method", ["nearest", "bilinear"])
def test_upsampling_shapes_and_values(method):
    grid = np.zeros((4, 4), int)
    grid[1:3, 1:3] = 1
    mask = t4s.grid_to_mask(grid, (40, 60), method)
    assert mask.shape == (40, 60) and mask.dtype == bool
    assert mask[20, 30] and not mask[0, 0]
    multi = grid.copy()
    multi[0, 0] = 2
    lm = t4s.grid_to_mask(multi, (40, 60), method)
    assert lm.dtype == np.int32 and lm[0, 0] == 2 and lm[20, 30] == 1
    assert t4s.grid_to_mask(multi, (40, 60), method, label=2).sum() > 0


def test_nearest_upsampling_inverts_nearest_downsampling_on_block_masks():
    grid = (np.random.default_rng(0).random((16, 16)) > 0.5).astype(int)
    mask = t4s.grid_to_mask(grid, (160, 320), "nearest")
    np.testing.assert_array_equal(mask_to_grid(mask, 16, "nearest"), grid.astype(bool))


def test_mask_to_box():
    mask = np.zeros((10, 20), bool)
    assert t4s.mask_to_box(mask) is None
    mask[2:5, 7:9] = True
    assert t4s.mask_to_box(mask) == (7, 2, 9, 5)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2-D"):
        mask_to_grid(np.zeros((3, 3, 3)), 4)
    with pytest.raises(ValueError, match="method"):
        mask_to_grid(np.zeros((3, 3)), 4, "cubic")
    with pytest.raises(ValueError, match="positive"):
        mask_to_grid(np.zeros((3, 3)), 0)
    with pytest.raises(ValueError, match="integers"):
        label_map_to_grid(np.zeros((3, 3), float), 4)


def test_output_sizes_above_max_pixels_are_refused_before_allocating():
    from text4seg.codec import MAX_PIXELS, as_image_size

    grid = np.eye(16, dtype=np.int32)
    huge = (2**14, 2**14 + 1)
    assert huge[0] * huge[1] > MAX_PIXELS
    for method in ("nearest", "bilinear", "guided"):
        with pytest.raises(ValueError, match="MAX_PIXELS") as info:
            t4s.grid_to_mask(grid, huge, method, image=np.zeros((4, 4, 3), np.uint8))
        assert "16384×16385" in str(info.value)
    d = t4s.decode(t4s.encode_mask(np.eye(32, dtype=bool), "line"))
    with pytest.raises(ValueError, match="MAX_PIXELS"):
        d.to_mask(huge)
    with pytest.raises(ValueError, match="MAX_PIXELS"):
        d.mask(huge, "no such label")
    assert as_image_size((2**13, 2**14)) == (8192, 16384)
    with pytest.raises(ValueError, match="positive"):
        as_image_size((0, 5))
