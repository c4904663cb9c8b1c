import numpy as np
import pytest

import text4seg as t4s


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def test_binary_mask_round_trip_to_image_size():
    mask = _disc(480, 640, 240, 300, 120)
    text = t4s.encode_mask(mask, "red circle")
    d = t4s.decode(text)
    assert d.ok and d.labels == ["others", "red circle"] and d.grid.shape == (16, 16)
    out = d.to_mask((480, 640))
    iou = (out & mask).sum() / (out | mask).sum()
    assert out.dtype == bool and iou > 0.85


def test_empty_target_is_all_background():
    text = t4s.encode_mask(np.zeros((100, 100), bool), "the green star")
    assert text == "others *16\n" + " others *16\n" * 15
    d = t4s.decode(text)
    assert d.is_empty and d.ok and not d.to_mask((100, 100)).any()


def test_multi_target_shares_one_label():
    mask = _disc(256, 256, 64, 64, 30) | _disc(256, 256, 190, 190, 30)
    d = t4s.decode(t4s.encode_mask(mask, "all red shapes"))
    assert d.labels == ["others", "all red shapes"]
    assert d.grid[4, 4] == 1 and d.grid[11, 11] == 1 and d.grid[4, 11] == 0


def test_multi_class_and_instance_labels():
    lm = np.zeros((64, 64), int)
    lm[:32, :32] = 1
    lm[32:, 32:] = 2
    lm[:16, 48:] = 3
    labels = ["others", "person 1", "person 2", "dog"]
    fmt = t4s.TEXT4SEG.with_grid(8)
    d = t4s.decode(t4s.encode_label_map(lm, labels, fmt), fmt, strict=True, labels=labels)
    np.testing.assert_array_equal(d.to_mask((64, 64), method="nearest"), lm)
    assert d.mask((64, 64), "dog", method="nearest").sum() == 16 * 16
    assert d.mask((64, 64), method="nearest").sum() == 32 * 32 * 2 + 16 * 16
    assert not d.mask((64, 64), "cat").any()
    with pytest.raises(ValueError, match="only 4 labels"):
        t4s.encode_label_map(lm + 1, labels, fmt)


def test_decode_accepts_whole_answers_and_rectangular_grids():
    fmt = t4s.TEXT4SEG.with_grid((2, 3))
    answer = t4s.format_answer("The cat is here.", "others *3\n cat *3\n", fmt)
    d = t4s.decode(answer, fmt, strict=True)
    assert d.grid.tolist() == [[0, 0, 0], [1, 1, 1]]
    assert d.to_text() == "others *3\n cat *3\n"


def test_target_label_must_differ_from_background():
    with pytest.raises(ValueError, match="background"):
        t4s.encode_mask(np.ones((4, 4), bool), "others")
