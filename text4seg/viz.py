"""Pictures for people: masks over images, the descriptor grid over an image, comparison sheets, curves.

PIL and numpy only, so the demo and the notebooks draw the same pictures without matplotlib. Every
function returns a `PIL.Image.Image`; save it with `.save(path)` (`save_overlay` writes the evaluation
picture, `overlay_panels`, to a file for `text4seg evaluate --overlays`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from text4seg.protocol.images import load_image

PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),
    (255, 40, 90),
    (30, 200, 90),
    (30, 140, 255),
    (255, 150, 30),
    (170, 60, 220),
    (30, 230, 230),
    (240, 60, 230),
    (200, 240, 50),
)
"""Colour per label value; value 0 (background) is never painted."""


def _font(size: int = 11) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def label_colour(value: int) -> tuple[int, int, int]:
    """The palette colour of a label value (values above the palette size wrap, skipping 0)."""
    if value <= 0:
        return PALETTE[0]
    return PALETTE[(value - 1) % (len(PALETTE) - 1) + 1]


def _resize_labels(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of an integer map to (width, height)."""
    width, height = size
    rows = (np.arange(height) * values.shape[0] // height).clip(0, values.shape[0] - 1)
    cols = (np.arange(width) * values.shape[1] // width).clip(0, values.shape[1] - 1)
    return values[np.ix_(rows, cols)]


def overlay(
    image: Image.Image | np.ndarray,
    mask: np.ndarray,
    *,
    alpha: float = 0.5,
    colour: tuple[int, int, int] | None = None,
    outline: bool = True,
) -> Image.Image:
    """`image` with `mask` painted over it.

    `mask` is a bool mask or an integer label map (0 = background), at image size or at any coarser
    size (a descriptor grid is stretched over the image, nearest-neighbour). `colour` paints every
    label in one colour; otherwise each label value gets its `PALETTE` colour. `outline` draws the
    mask border in the full colour so thin masks stay visible.
    """
    base = load_image(image)
    values = np.asarray(mask)
    if values.ndim != 2:
        raise ValueError(f"mask must be 2-D (H×W), got shape {values.shape}")
    values = values.astype(np.int64)
    if values.shape != (base.height, base.width):
        values = _resize_labels(values, base.size)
    rgb = np.asarray(base, dtype=np.float32)
    if colour is not None:
        colours = np.where(values[..., None] > 0, np.asarray(colour, dtype=np.float32), 0.0)
    else:
        lut = np.asarray([label_colour(v) for v in range(int(values.max(initial=0)) + 1)], dtype=np.float32)
        colours = lut[values.clip(0)]
    painted = np.where(values[..., None] > 0, (1 - alpha) * rgb + alpha * colours, rgb)
    if outline:
        edge = np.zeros(values.shape, dtype=bool)
        edge[:-1] |= values[:-1] != values[1:]
        edge[1:] |= values[:-1] != values[1:]
        edge[:, :-1] |= values[:, :-1] != values[:, 1:]
        edge[:, 1:] |= values[:, :-1] != values[:, 1:]
        edge &= values > 0
        painted[edge] = colours[edge]
    return Image.fromarray(painted.clip(0, 255).astype(np.uint8))


def draw_grid(
    image: Image.Image | np.ndarray,
    grid: int | tuple[int, int] = 16,
    *,
    cells: np.ndarray | None = None,
    colour: tuple[int, int, int] = (255, 255, 255),
    scale: int = 1,
) -> Image.Image:
    """The descriptor grid drawn over `image` (enlarged `scale` times): cell borders and, when
    `cells` (a rows×cols label grid) is given, the cells that hold a label filled in its colour."""
    base = load_image(image)
    if scale != 1:
        base = base.resize((base.width * scale, base.height * scale), Image.NEAREST)
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    if cells is not None:
        cells = np.asarray(cells)
        if cells.shape != (rows, cols):
            raise ValueError(f"cells has shape {cells.shape}, expected the grid {(rows, cols)}")
        base = overlay(base, cells, alpha=0.45, outline=False)
    draw = ImageDraw.Draw(base)
    for r in range(1, rows):
        y = round(r * base.height / rows)
        draw.line([(0, y), (base.width, y)], fill=colour, width=1)
    for c in range(1, cols):
        x = round(c * base.width / cols)
        draw.line([(x, 0), (x, base.height)], fill=colour, width=1)
    return base


def grid_picture(cells: np.ndarray, cell_size: int = 12, labels: Sequence[str] | None = None) -> Image.Image:
    """A label grid drawn as coloured squares (background white), with a legend when `labels` is given."""
    cells = np.asarray(cells).astype(np.int64)
    rows, cols = cells.shape
    body = np.full((rows, cols, 3), 255, dtype=np.uint8)
    for value in np.unique(cells):
        if value > 0:
            body[cells == value] = label_colour(int(value))
    picture = Image.fromarray(body).resize((cols * cell_size, rows * cell_size), Image.NEAREST)
    picture = draw_grid(picture, (rows, cols), colour=(210, 210, 210))
    if not labels:
        return picture
    font = _font()
    legend_h = 14 * (len(labels) - 1) + 4
    sheet = Image.new("RGB", (picture.width, picture.height + legend_h), "white")
    sheet.paste(picture, (0, 0))
    draw = ImageDraw.Draw(sheet)
    for value, name in enumerate(labels[1:], start=1):
        y = picture.height + 2 + 14 * (value - 1)
        draw.rectangle([2, y + 2, 11, y + 11], fill=label_colour(value))
        draw.text((15, y), name, fill="black", font=font)
    return sheet


MIN_PANEL_WIDTH = 160
"""Panels of `overlay_panels` are enlarged (nearest-neighbour) to at least this width, so captions fit."""


def overlay_panels(
    image: Image.Image | np.ndarray,
    truth: np.ndarray,
    coarse: np.ndarray,
    refined: np.ndarray | None = None,
    title: str = "",
) -> Image.Image:
    """The evaluation picture: `image` with `ground truth | coarse | refined` masks side by side (the last
    only when given), `title` above and each panel's name below. Masks are bool or label maps at image
    size; a label value has the same colour in every panel."""
    base = load_image(image)
    panels = [("ground truth", truth), ("coarse", coarse)] + (
        [("refined", refined)] if refined is not None else []
    )
    scale = max(1, -(-MIN_PANEL_WIDTH // base.width))
    width, height = base.width * scale, base.height * scale
    caption = 14
    sheet = Image.new("RGB", (width * len(panels), height + 2 * caption), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font()
    draw.text((2, 1), title[:120], fill="black", font=font)
    for k, (name, mask) in enumerate(panels):
        sheet.paste(overlay(base, mask).resize((width, height), Image.NEAREST), (k * width, caption))
        draw.text((k * width + 2, height + caption + 1), name, fill="black", font=font)
    return sheet


def save_overlay(
    path: str | os.PathLike,
    image: Image.Image | np.ndarray,
    truth: np.ndarray,
    coarse: np.ndarray,
    refined: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """Write `overlay_panels(...)` as a PNG at `path` (folders made as needed); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    overlay_panels(image, truth, coarse, refined, title).save(out)
    return out


@dataclass(frozen=True)
class Example:
    """One row of a comparison sheet: the image, its masks and what to write under it."""

    image: Image.Image | np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    caption: str
    score: float | None = None


def _wrap(text: str, width_px: int, font: ImageFont.ImageFont) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if line and font.getlength(trial) > width_px:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def comparison_sheet(examples: Sequence[Example], tile: int = 160, columns: int = 1) -> Image.Image:
    """Examples as rows of `image | ground truth | prediction | expression (and IoU)` tiles.

    `columns` > 1 places that many such rows side by side (for a compact sheet of many examples).
    """
    if not examples:
        raise ValueError("comparison_sheet needs at least one example")
    font = _font(12)
    head = 18
    panel_w = 4 * tile + 6
    n_rows = math.ceil(len(examples) / columns)
    sheet = Image.new("RGB", (columns * panel_w, head + n_rows * (tile + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for c in range(columns):
        for k, name in enumerate(("image", "ground truth", "prediction", "expression")):
            draw.text((c * panel_w + k * tile + 4, 3), name, fill="black", font=font)
    for index, ex in enumerate(examples):
        col, row = index % columns, index // columns
        x0, y0 = col * panel_w, head + row * (tile + 4)
        base = load_image(ex.image).resize((tile, tile), Image.BILINEAR)
        truth = overlay(base, np.asarray(ex.truth), colour=PALETTE[2])
        pred = overlay(base, np.asarray(ex.prediction), colour=PALETTE[1])
        for k, picture in enumerate((base, truth, pred)):
            sheet.paste(picture, (x0 + k * tile, y0))
        text = f'"{ex.caption}"' + (f"\nIoU {ex.score:.2f}" if ex.score is not None else "")
        lines = [w for part in text.split("\n") for w in _wrap(part, tile - 8, font)]
        for k, line in enumerate(lines[: tile // 15]):
            draw.text((x0 + 3 * tile + 6, y0 + 4 + 15 * k), line, fill="black", font=font)
    return sheet


def line_plot(
    xs: Sequence[float],
    series: dict[str, Sequence[float]],
    *,
    title: str = "",
    xlabel: str = "step",
    size: tuple[int, int] = (640, 400),
    log_y: bool = False,
) -> Image.Image:
    """A small line chart (e.g. the training loss per step) drawn with PIL; one colour per series."""
    if not series:
        raise ValueError("line_plot needs at least one series")
    width, height = size
    left, right, top, bottom = 56, 16, 28, 40
    chart = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(chart)
    font = _font(11)
    xs = [float(x) for x in xs]
    values = {name: [float(v) for v in ys] for name, ys in series.items()}
    finite = [v for ys in values.values() for v in ys if math.isfinite(v) and (v > 0 or not log_y)]
    if not xs or not finite:
        draw.text((left, top), "no data", fill="black", font=font)
        return chart

    def ty(v: float) -> float:
        return math.log10(v) if log_y else v

    lo, hi = min(ty(v) for v in finite), max(ty(v) for v in finite)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    x_lo, x_hi = min(xs), max(xs)
    if x_hi - x_lo < 1e-9:
        x_lo, x_hi = x_lo - 0.5, x_hi + 0.5

    def px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x_lo) / (x_hi - x_lo) * (width - left - right),
            top + (1 - (ty(y) - lo) / (hi - lo)) * (height - top - bottom),
        )

    draw.rectangle([left, top, width - right, height - bottom], outline=(120, 120, 120))
    for k in range(5):
        frac = k / 4
        y = top + frac * (height - top - bottom)
        raw = hi - frac * (hi - lo)
        value = 10**raw if log_y else raw
        draw.line([(left, y), (width - right, y)], fill=(230, 230, 230))
        draw.text((4, y - 6), f"{value:.3g}", fill="black", font=font)
        x = left + frac * (width - left - right)
        draw.text(
            (x - 10, height - bottom + 4), f"{x_lo + frac * (x_hi - x_lo):.0f}", fill="black", font=font
        )
    draw.text((width // 2 - 20, height - 18), xlabel, fill="black", font=font)
    draw.text((left, 6), title, fill="black", font=font)
    for index, (name, ys) in enumerate(values.items(), start=1):
        points = [px(x, y) for x, y in zip(xs, ys, strict=False) if math.isfinite(y) and (y > 0 or not log_y)]
        if len(points) > 1:
            draw.line(points, fill=label_colour(index), width=2)
        draw.text(
            (width - right - 150, top + 4 + 14 * (index - 1)), name, fill=label_colour(index), font=font
        )
    return chart


def histogram(
    groups: dict[str, Sequence[float]], *, bins: int = 20, title: str = "", xlabel: str = "", size=(640, 400)
) -> Image.Image:
    """Overlaid histograms of several groups of numbers (e.g. tokens per descriptor, two formats)."""
    width, height = size
    left, right, top, bottom = 48, 16, 28, 40
    chart = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(chart)
    font = _font(11)
    everything = [float(v) for vs in groups.values() for v in vs]
    if not everything:
        draw.text((left, top), "no data", fill="black", font=font)
        return chart
    edges = np.histogram_bin_edges(everything, bins=bins)
    counts = {name: np.histogram(np.asarray(vs, dtype=float), bins=edges)[0] for name, vs in groups.items()}
    peak = max(int(c.max(initial=0)) for c in counts.values()) or 1
    span = edges[-1] - edges[0] or 1.0
    plot_w, plot_h = width - left - right, height - top - bottom
    draw.rectangle([left, top, width - right, height - bottom], outline=(120, 120, 120))
    for index, (name, c) in enumerate(counts.items(), start=1):
        colour = label_colour(index)
        for k, n in enumerate(c):
            if not n:
                continue
            x0 = left + (edges[k] - edges[0]) / span * plot_w
            x1 = left + (edges[k + 1] - edges[0]) / span * plot_w
            y0 = top + (1 - n / peak) * plot_h
            draw.rectangle([x0 + 1, y0, x1 - 1, top + plot_h], outline=colour, width=2)
        draw.text((width - right - 170, top + 4 + 14 * (index - 1)), name, fill=colour, font=font)
    for k in range(5):
        frac = k / 4
        draw.text(
            (left + frac * plot_w - 10, height - bottom + 4),
            f"{edges[0] + frac * span:.0f}",
            fill="black",
            font=font,
        )
        draw.text((4, top + frac * plot_h - 6), f"{peak * (1 - frac):.0f}", fill="black", font=font)
    draw.text((width // 2 - 30, height - 18), xlabel, fill="black", font=font)
    draw.text((left, 6), title, fill="black", font=font)
    return chart
