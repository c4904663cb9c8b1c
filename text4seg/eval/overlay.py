"""Evaluation overlays: the image with ground truth, coarse and refined masks side by side (PIL only)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MIN_PANEL_WIDTH = 160
PALETTE = np.array(
    [
        (0, 0, 0),
        (0, 230, 0),
        (230, 25, 75),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 212),
    ],
    dtype=np.float32,
)


def tint(image: Image.Image, mask: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """`image` with each non-zero value of `mask` (bool or label map) tinted and outlined in its palette colour."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    values = np.asarray(mask).astype(np.int64)
    colours = PALETTE[np.where(values > 0, (values - 1) % (len(PALETTE) - 1) + 1, 0)]
    painted = np.where(values[..., None] > 0, (1 - alpha) * rgb + alpha * colours, rgb)
    padded = np.pad(values, 1, mode="edge")
    edge = (values > 0) & (
        (padded[:-2, 1:-1] != values)
        | (padded[2:, 1:-1] != values)
        | (padded[1:-1, :-2] != values)
        | (padded[1:-1, 2:] != values)
    )
    painted[edge] = colours[edge]  # a solid outline keeps the region readable on any background
    return Image.fromarray(painted.clip(0, 255).astype(np.uint8))


def save_overlay(
    path: str | os.PathLike,
    image: Image.Image,
    truth: np.ndarray,
    coarse: np.ndarray,
    refined: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Write one PNG: panels `ground truth | coarse | refined` (the last only when given), captioned."""
    panels = [("ground truth", truth), ("coarse", coarse)] + (
        [("refined", refined)] if refined is not None else []
    )
    scale = max(1, -(-MIN_PANEL_WIDTH // image.width))  # small images are enlarged so captions fit
    width, height = image.width * scale, image.height * scale
    caption = 14
    sheet = Image.new("RGB", (width * len(panels), height + 2 * caption), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((2, 1), title[:120], fill="black")
    for k, (name, mask) in enumerate(panels):
        sheet.paste(tint(image, mask).resize((width, height), Image.NEAREST), (k * width, caption))
        draw.text((k * width + 2, height + caption + 1), name, fill="black")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
