"""2-D sin-cos initialisation of a vision tower's learned position table.

A random-initialised vision tower (tests, the demo) starts with position embeddings drawn at the
config's `initializer_range` (0.02), about a sixteenth of its patch features (measured for the demo's
Qwen3-VL: 0.33 against 0.02), and they barely grow in a short run. The patches' columns are then
nearly invisible to the language model, which must read an object's column from the image tokens'
values. Pretrained towers carry strong position features; this gives a random one the same start: a
2-D sin-cos table (as in MAE's fixed embeddings) at the scale of the patch features, which a linear
layer can decode into row and column.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["init_vision_positions", "sincos_table"]


def sincos_table(side: int, dim: int, scale: float = 1.0) -> np.ndarray:
    """`(side * side, dim)` table for a row-major `side`×`side` grid: half the channels code the row,
    half the column, each as sin/cos pairs with periods spread geometrically from 2 to 4×`side` cells.

    Every entry has amplitude `scale`; `dim` must be a multiple of 4.
    """
    if side < 1 or dim < 4 or dim % 4:
        raise ValueError(f"sincos_table needs side >= 1 and dim a multiple of 4, got side={side}, dim={dim}")
    n_freq = dim // 4
    periods = 2.0 * (2.0 * side) ** (np.arange(n_freq) / max(1, n_freq - 1))
    omega = 2.0 * math.pi / periods
    pos = np.arange(side, dtype=np.float64)[:, None] * omega[None, :]
    axis = np.concatenate([np.sin(pos), np.cos(pos)], axis=1)  # (side, dim / 2)
    rows = np.repeat(axis, side, axis=0)  # row index r = k // side
    cols = np.tile(axis, (side, 1))  # column index c = k % side
    return (scale * np.concatenate([rows, cols], axis=1)).astype(np.float32)


def _position_table(model: Any) -> Any:
    """The vision tower's learned square position table (an `nn.Embedding`), or None."""
    import torch

    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("pos_embed", "position_embedding") and isinstance(module, torch.nn.Embedding):
            side = math.isqrt(module.num_embeddings)
            if side * side == module.num_embeddings and ("visual" in name or "vision" in name):
                return module
    return None


def init_vision_positions(model: Any, scale: float | None = None) -> float:
    """Overwrite the vision tower's square learned position table with `sincos_table`; returns the scale.

    `scale` None matches the amplitude to the patch embedding's typical output (the table's std then
    equals the patch features' std on unit-variance pixels). Raises ValueError when the model has no
    square learned table (Qwen2-VL and Qwen2.5-VL use rotary positions only; CLIP adds a class slot).
    """
    import torch

    table = _position_table(model)
    if table is None:
        raise ValueError(
            f"{type(model).__name__} has no square learned position table in its vision tower "
            "(looked for a vision `pos_embed` / `position_embedding` embedding with a square count)"
        )
    side = math.isqrt(table.num_embeddings)
    if scale is None:
        scale = _patch_feature_std(model) * math.sqrt(2.0)  # a sin/cos channel has std amplitude / sqrt 2
    values = torch.from_numpy(sincos_table(side, table.embedding_dim, scale))
    with torch.no_grad():
        table.weight.copy_(values.to(table.weight.dtype))
    return float(scale)


def _patch_feature_std(model: Any) -> float:
    """Std of the vision patch embedding's output on standard-normal pixels (the features' scale)."""

    for name, module in model.named_modules():
        if name.endswith("patch_embed") or name.endswith("patch_embedding"):
            weights = [p for n, p in module.named_parameters() if n.endswith("weight") and p.dim() > 1]
            if weights:
                w = weights[0].detach().float()
                return float(w.reshape(w.shape[0], -1).norm(dim=1).mean())
    return 1.0
