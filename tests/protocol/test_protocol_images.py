"""Image loading for prediction: every PIL mode and array kind becomes upright 8-bit RGB."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from support.images import H, W, exif_rotated_jpeg, mode_images

from text4seg.protocol.images import ImageReadError, load_image


@pytest.mark.parametrize("mode", sorted(mode_images()))
def test_every_mode_becomes_rgb(mode):
    image = mode_images()[mode]
    assert image.mode == mode
    rgb = load_image(image)
    assert rgb.mode == "RGB" and rgb.size == (W, H)
    row = np.asarray(rgb)[0, :, 0].astype(int)
    if mode != "1":  # 1-bit dithers
        assert row[0] < 10 and row[-1] > 245 and np.all(np.diff(row) >= -2)


def test_sixteen_bit_scales_to_eight_bit():
    img = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert np.asarray(load_image(img)).min() == 255


def test_transparent_pixels_become_white():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[:2, :, 3] = 255  # top half opaque black, bottom half transparent
    out = np.asarray(load_image(Image.fromarray(rgba)))
    assert out[0, 0].tolist() == [0, 0, 0] and out[3, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((H, W), np.uint8),
        np.zeros((H, W, 1), np.uint8),
        np.zeros((H, W, 3), np.uint8),
        np.zeros((H, W, 4), np.uint8),
        np.zeros((H, W), np.uint16),
        np.zeros((H, W, 3), np.float32),
        np.zeros((H, W), bool),
    ],
    ids=["gray", "gray1", "rgb", "rgba", "u16", "float", "bool"],
)
def test_arrays(array):
    assert load_image(array).size == (W, H)


def test_exif_orientation_is_honoured(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(exif_rotated_jpeg())
    for source in (path, str(path), path.read_bytes()):
        upright = load_image(source)
        assert upright.size == (H, W)  # shown rotated: width and height swap
        pixels = np.asarray(upright).astype(int)
        assert pixels[1, H // 2, 0] > 200  # the red left half is now on top
        assert pixels[-2, H // 2, 0] < 60


def test_unreadable_inputs_raise_clear_errors(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="broken.png"):
        load_image(bad)
    with pytest.raises(ImageReadError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="shape"):
        load_image(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ImageReadError, match="empty"):
        load_image(np.zeros((0, 3), np.uint8))
    with pytest.raises(ImageReadError, match="int"):
        load_image(42)
