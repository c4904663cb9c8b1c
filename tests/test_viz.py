"""text4seg.viz: overlays, grid pictures, comparison sheets and charts (pixels checked, not just sizes)."""

import numpy as np
import pytest
from PIL import Image

from text4seg import viz


def _grey(size=(32, 24)):
    return Image.new("RGB", size, (100, 100, 100))


def test_overlay_paints_only_the_mask():
    mask = np.zeros((24, 32), dtype=bool)
    mask[5:15, 10:20] = True
    out = np.asarray(viz.overlay(_grey(), mask, alpha=0.5, colour=(200, 0, 0), outline=False))
    assert out.shape == (24, 32, 3)
    assert tuple(out[0, 0]) == (100, 100, 100)
    assert tuple(out[10, 15]) == (150, 50, 50)


def test_overlay_outline_and_label_colours():
    labels = np.zeros((24, 32), dtype=np.int32)
    labels[2:10, 2:10] = 1
    labels[12:20, 12:30] = 2
    out = np.asarray(viz.overlay(_grey(), labels, alpha=0.5))
    assert tuple(out[2, 2]) == viz.label_colour(1)  # border: full colour
    assert tuple(out[5, 5]) != tuple(out[15, 20])  # two labels, two colours
    assert tuple(out[22, 2]) == (100, 100, 100)


def test_overlay_stretches_a_coarse_grid():
    grid = np.zeros((4, 4), dtype=bool)
    grid[0, 0] = True
    out = np.asarray(viz.overlay(_grey((64, 64)), grid, colour=(0, 0, 255), outline=False))
    assert out[8, 8, 2] > 150 and out[40, 40, 2] == 100


def test_overlay_accepts_arrays_and_rejects_bad_masks():
    image = np.full((8, 8, 3), 10, dtype=np.uint8)
    assert viz.overlay(image, np.ones((8, 8), bool)).size == (8, 8)
    with pytest.raises(ValueError, match="2-D"):
        viz.overlay(image, np.ones((8, 8, 1), bool))


def test_draw_grid_lines_and_cells():
    out = viz.draw_grid(_grey((64, 64)), 4, colour=(255, 255, 255))
    arr = np.asarray(out)
    assert tuple(arr[16, 5]) == (255, 255, 255) and tuple(arr[5, 5]) == (100, 100, 100)
    cells = np.zeros((4, 4), dtype=np.int32)
    cells[1, 1] = 1
    arr = np.asarray(viz.draw_grid(_grey((64, 64)), 4, cells=cells, scale=2))
    assert arr.shape == (128, 128, 3)
    assert tuple(arr[48, 48]) != (100, 100, 100)
    with pytest.raises(ValueError, match="expected the grid"):
        viz.draw_grid(_grey(), 4, cells=np.zeros((3, 3)))


def test_grid_picture_with_legend():
    cells = np.zeros((3, 5), dtype=np.int32)
    cells[1, 2] = 1
    plain = viz.grid_picture(cells, cell_size=10)
    assert plain.size == (50, 30)
    assert tuple(np.asarray(plain)[15, 25]) == viz.label_colour(1)
    legend = viz.grid_picture(cells, cell_size=10, labels=["others", "red circle"])
    assert legend.height > plain.height


def test_comparison_sheet_layout():
    mask = np.zeros((24, 32), dtype=bool)
    mask[:5] = True
    examples = [viz.Example(_grey(), mask, ~mask, "the red circle", 0.5) for _ in range(3)]
    sheet = viz.comparison_sheet(examples, tile=40, columns=2)
    assert sheet.size == (2 * (4 * 40 + 6), 18 + 2 * 44)
    assert np.asarray(sheet).std() > 0
    with pytest.raises(ValueError):
        viz.comparison_sheet([])


def test_line_plot_and_histogram_draw_something():
    chart = viz.line_plot([0, 1, 2, 3], {"loss": [4.0, 2.0, 1.0, 0.5]}, title="loss", log_y=True)
    assert chart.size == (640, 400)
    arr = np.asarray(chart)
    assert (np.abs(arr.astype(int) - viz.label_colour(1)).sum(axis=2) == 0).sum() > 50
    empty = viz.line_plot([], {"loss": []})
    assert empty.size == (640, 400)
    hist = viz.histogram({"R-RLE": [10, 12, 14], "cells": [256, 256, 300]}, bins=5)
    assert (np.abs(np.asarray(hist).astype(int) - viz.label_colour(2)).sum(axis=2) == 0).sum() > 20


def test_overlay_panels_share_one_palette_and_save(tmp_path):
    truth = np.zeros((24, 32), dtype=np.int32)
    truth[4:20, 4:20] = 2
    coarse = truth.copy()
    sheet = viz.overlay_panels(_grey(), truth, coarse, coarse > 0, title="two shapes")
    scale = -(-viz.MIN_PANEL_WIDTH // 32)
    assert sheet.size == (3 * 32 * scale, 24 * scale + 28)
    pixels = np.asarray(sheet)
    inside = 14 + 10 * scale  # a row inside the painted square
    first, second = pixels[inside, 10 * scale], pixels[inside, 32 * scale + 10 * scale]
    assert tuple(first) == tuple(second) != (100, 100, 100)  # value 2: one colour in both panels
    path = viz.save_overlay(tmp_path / "o" / "a.png", _grey(), truth, coarse)
    assert Image.open(path).size == (2 * 32 * scale, 24 * scale + 28)


def test_eval_overlay_is_a_deprecated_alias():
    import importlib
    import sys

    sys.modules.pop("text4seg.eval.overlay", None)
    with pytest.warns(DeprecationWarning, match="moved to text4seg.viz"):
        module = importlib.import_module("text4seg.eval.overlay")
    assert module.save_overlay is viz.save_overlay
