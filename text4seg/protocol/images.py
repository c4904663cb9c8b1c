"""The one image reader: every stage (data checks, training, prediction, evaluation, refiners, pictures)
reads images here, with one orientation rule.

**Orientation rule**: an image is used as a viewer shows it, i.e. its EXIF orientation tag is applied
(`ImageOps.exif_transpose`) and the pixel grid the model sees, the descriptor grid, the masks and the
record's width/height all refer to that upright image.

Models see 8-bit RGB. `load_image` turns a path, bytes, numpy array or PIL image of any mode (RGB, L,
RGBA, P, CMYK, 16-bit I;16, 32-bit I/F, 1) into an upright RGB image; `read_record_image` does the same
for a record's stored image value (a `datasets.Image` dict of bytes or path, or a path string).
Images larger than `MAX_IMAGE_PIXELS` are refused before they are decoded.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from text4seg.codec.grid import MAX_PIXELS

ImageInput = Image.Image | np.ndarray | str | os.PathLike | bytes

MAX_IMAGE_PIXELS = MAX_PIXELS
"""The library's one pixel limit (`text4seg.codec.grid.MAX_PIXELS`, 134 M pixels, e.g. 16384×8192):
images, masks and records claiming more are refused before anything of that size is allocated."""


class ImageReadError(ValueError):
    """An image that cannot be read or converted (says which file or what input)."""


def check_pixels(height: int, width: int, what: str = "an image") -> None:
    """Raise ValueError unless `height`×`width` is a positive size within `MAX_IMAGE_PIXELS`."""
    if height <= 0 or width <= 0:
        raise ValueError(f"{what}: size {width}×{height} is not positive")
    if height * width > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"{what}: {width}×{height} = {width * height:,} pixels is over the limit of "
            f"{MAX_IMAGE_PIXELS:,} (text4seg.codec.grid.MAX_PIXELS)"
        )


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale a high-bit-depth or float array to 0..255: 16-bit integers by /257, anything else by its range."""
    values = np.asarray(values)
    if values.dtype == np.uint8:
        return values
    if values.dtype == bool:
        return values.astype(np.uint8) * 255
    if (
        np.issubdtype(values.dtype, np.integer)
        and values.min(initial=0) >= 0
        and values.max(initial=0) <= 65535
    ):
        if values.max(initial=0) <= 255:
            return values.astype(np.uint8)
        return (values.astype(np.float64) / 257.0).round().astype(np.uint8)
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        lo, hi = 0.0, 1.0
    scaled = (np.nan_to_num(values, nan=lo) - lo) / max(hi - lo, 1e-12)
    return (np.clip(scaled, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _array_to_image(array: np.ndarray) -> Image.Image:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim == 2:
        return Image.fromarray(_to_uint8(array))
    if array.ndim == 3 and array.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(_to_uint8(array)))
    raise ImageReadError(f"an image array must be H×W, H×W×1, H×W×3 or H×W×4, got shape {array.shape}")


def to_rgb(image: Image.Image) -> Image.Image:
    """An upright 8-bit RGB copy of a PIL image of any mode (transparent pixels composited on white)."""
    image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(image: ImageInput) -> Image.Image:
    """Read `image` (path, bytes, array or PIL image) as upright 8-bit RGB; `ImageReadError` if it can't be."""
    if isinstance(image, Image.Image):
        try:
            return to_rgb(image)
        except (OSError, ValueError) as err:
            raise ImageReadError(f"cannot convert {image.mode} image of size {image.size}: {err}") from err
    if isinstance(image, np.ndarray):
        if image.size == 0:
            raise ImageReadError(f"empty image array of shape {image.shape}")
        if image.ndim >= 2:
            try:
                check_pixels(image.shape[0], image.shape[1], "image array")
            except ValueError as err:
                raise ImageReadError(str(err)) from err
        return to_rgb(_array_to_image(image))
    if isinstance(image, (bytes, bytearray)):
        source, name = io.BytesIO(image), f"<{len(image)} bytes>"
    elif isinstance(image, (str, os.PathLike)):
        source = name = os.fspath(image)
        if not os.path.isfile(source):
            raise ImageReadError(f"cannot read image {source}: file not found")
    else:
        raise ImageReadError(f"cannot read an image from {type(image).__name__}")
    try:
        with warnings.catch_warnings():  # PIL warns from 89 M pixels; the library's own limit decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(source)
        with opened:
            check_pixels(opened.height, opened.width, f"image {name}")
            opened.load()
            return to_rgb(opened)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise ImageReadError(f"cannot read image {name}: {err}") from err


def read_record_image(value: Any, record_id: str = "?") -> Image.Image:
    """A record's stored image value (PIL image, `datasets.Image` dict with bytes or path, path string) as
    upright RGB; `ImageReadError` naming the record otherwise."""
    if isinstance(value, Mapping):
        if value.get("bytes"):
            value = bytes(value["bytes"])
        elif value.get("path"):
            value = value["path"]
        else:
            raise ImageReadError(f"record {record_id}: image dict has neither bytes nor path")
    if not isinstance(value, (Image.Image, bytes, str, os.PathLike)):
        raise ImageReadError(f"record {record_id}: image is a {type(value).__name__}, not an image or a path")
    try:
        return load_image(value)
    except ImageReadError as err:
        raise ImageReadError(f"record {record_id}: {err}") from err
