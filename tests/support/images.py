"""Sample images shared by the tests (every PIL mode; an EXIF-rotated JPEG)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

H, W = 12, 20


def _gradient() -> np.ndarray:
    return np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))


def mode_images() -> dict[str, Image.Image]:
    base = Image.fromarray(np.stack([_gradient()] * 3, axis=-1), mode="RGB")
    return {
        "RGB": base,
        "L": base.convert("L"),
        "LA": base.convert("LA"),
        "RGBA": base.convert("RGBA"),
        "P": base.convert("P"),
        "CMYK": base.convert("CMYK"),
        "YCbCr": base.convert("YCbCr"),
        "1": base.convert("1"),
        "I;16": Image.fromarray(_gradient().astype(np.uint16) * 257),
        "I": Image.fromarray(_gradient().astype(np.int32) * 257),
        "F": Image.fromarray(_gradient().astype(np.float32) / 255.0),
    }


def exif_rotated_jpeg(orientation: int = 6) -> bytes:
    """A W×H JPEG whose left half is red, tagged to be shown rotated 90° clockwise."""
    pixels = np.zeros((H, W, 3), dtype=np.uint8)
    pixels[:, : W // 2] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()
