"""2-D sin-cos start for a vision tower's position table: decodable rows and columns, applied in place."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from text4seg.models.positions import init_vision_positions, sincos_table
from text4seg.models.tiny import build_tiny


def test_sincos_table_codes_row_and_column_linearly():
    side, dim = 16, 64
    table = sincos_table(side, dim, scale=0.5)
    assert table.shape == (side * side, dim) and table.dtype == np.float32
    assert np.abs(table).max() <= 0.5 + 1e-6
    # the first half depends on the row only, the second half on the column only
    rows, cols = np.divmod(np.arange(side * side), side)
    assert np.allclose(table[:, : dim // 2], table[rows * side, : dim // 2])
    assert np.allclose(table[:, dim // 2 :], table[cols, dim // 2 :])
    # a linear read-out recovers every cell's one-hot column exactly (what the language model must learn)
    x = np.c_[table, np.ones(len(table))]
    onehot = np.eye(side)[cols]
    coef, *_ = np.linalg.lstsq(x, onehot, rcond=None)
    assert np.array_equal((x @ coef).argmax(1), cols)


@pytest.mark.parametrize("side, dim", [(0, 8), (4, 6), (4, 2)])
def test_sincos_table_rejects_bad_shapes(side, dim):
    with pytest.raises(ValueError, match="multiple of 4"):
        sincos_table(side, dim)


def test_init_vision_positions_overwrites_the_qwen3_vl_table():
    model, _ = build_tiny("qwen3_vl", image_size=64, patch_size=8, vision_hidden_size=32)
    table = model.model.visual.pos_embed
    before = table.weight.detach().clone()
    scale = init_vision_positions(model)
    side = int(np.sqrt(table.num_embeddings))
    assert scale > 0
    assert not torch.allclose(before, table.weight)
    assert torch.allclose(table.weight, torch.from_numpy(sincos_table(side, table.embedding_dim, scale)))
    # the default scale follows the patch features: far above the 0.02 random init
    assert table.weight.std() > 5 * before.std()
    assert (
        init_vision_positions(model, 0.25) == 0.25 and float(table.weight.detach().abs().max()) <= 0.25 + 1e-6
    )


def test_init_vision_positions_names_the_model_without_a_table():
    model, _ = build_tiny("qwen2_5_vl")
    with pytest.raises(ValueError, match="Qwen2_5_VL.*no square learned position table"):
        init_vision_positions(model)
