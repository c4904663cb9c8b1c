"""The light learned refiner at inference: `--refine light:PATH` in `predict` and `evaluate`.

`LightRefiner` has `SamRefiner`'s `refine(image, grid, coarse=..., key=...)`, so the segmenter and the
evaluation loop use either. Each label of the grid is refined on its own (guided upsampling of its cells
plus the net's correction, `text4seg.models.light_refiner`); where labels overlap the pixel goes to the
larger logit. Train one with `text4seg train-refiner`.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from text4seg.codec import grid_to_mask
from text4seg.infer.refine import Refinement
from text4seg.models.light_refiner import LightRefinerNet, load_light_refiner, refine_logits
from text4seg.protocol.images import load_image


class LightRefiner:
    """Refines coarse label grids with a trained `LightRefinerNet` (see the module docstring)."""

    def __init__(self, net: LightRefinerNet, *, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.net = net.to(self.device).eval()

    @classmethod
    def load(cls, folder: str | Path, *, device: str | torch.device | None = None) -> LightRefiner:
        """The refiner saved in `folder` (`LightRefinerError` naming the file when it cannot be read)."""
        return cls(load_light_refiner(folder), device=device)

    def refine(
        self,
        image: Image.Image | np.ndarray,
        grid: np.ndarray,
        *,
        coarse: np.ndarray | None = None,
        key: Hashable | None = None,
    ) -> Refinement:
        """Refine a g×g label grid (0 = background) for `image`: a bool mask for a 0/1 grid, else an
        int32 label map, at image size. `coarse` (the caller's coarse mask; default the grid upsampled
        bilinearly) is kept in the result; `key` is accepted for `SamRefiner`'s signature and unused
        (nothing is cached)."""
        start = time.perf_counter()
        rgb = np.asarray(load_image(image))
        grid = np.asarray(grid)
        if grid.ndim != 2:
            raise ValueError(f"grid must be 2-D, got shape {grid.shape}")
        grid = grid.astype(np.int64)
        size = rgb.shape[:2]
        binary = grid.max(initial=0) <= 1
        best = np.full(size, -np.inf, dtype=np.float32)
        label_map = np.zeros(size, dtype=np.int32)
        for value in (int(v) for v in np.unique(grid) if v > 0):
            logits = refine_logits(self.net, rgb, grid == value)
            take = (logits >= 0) & (logits > best)
            label_map[take] = value
            best = np.where(take, logits, best)
        mask = label_map > 0 if binary else label_map
        if coarse is None:  # as SamRefiner: the grid upsampled by the codec's default
            coarse = grid_to_mask(grid, size).astype(mask.dtype)
        return Refinement(mask, np.asarray(coarse), [], False, {"refine": time.perf_counter() - start})
