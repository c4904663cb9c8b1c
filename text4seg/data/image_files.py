"""The image files a build reads: found under the image folder only, sized by the protocol's rule.

A ``file_name`` comes from an annotation file, which may be hostile: ``../outside/secret.jpg``, an
absolute path or a symlink pointing elsewhere would make the builder read (and embed) a file outside
``--images``. `locate_image` resolves the path and refuses any that leaves the root. `upright_size`
reads only the header: the size after the EXIF orientation of `text4seg.protocol.images` (the one
orientation rule), refusing images over `MAX_IMAGE_PIXELS` before anything is decoded.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path, PurePosixPath

from PIL import Image

from text4seg.protocol.images import MAX_IMAGE_PIXELS, check_pixels

_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class ImageFileProblem(ValueError):
    """An image file the build cannot use; ``reason`` is a short code for the report."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def locate_image(root: Path, file_name: str, *, root_resolved: bool = False) -> Path:
    """The resolved path of ``file_name`` under ``root``; `ImageFileProblem` if it leaves the root or is
    not a file. Messages name ``file_name`` as given, not the path tried. ``root_resolved``: the caller
    passes ``root.resolve()`` (a build resolves it once, not once per image)."""
    try:
        root = root if root_resolved else root.resolve()
        fast = _plain_file_under(root, file_name)
        if fast is not None:
            return fast
        path = (root / file_name).resolve()
    except (OSError, ValueError, RuntimeError) as err:  # null bytes, symlink loops
        raise ImageFileProblem("bad_image_path", f"file_name {file_name!r}: {err}") from None
    if not path.is_relative_to(root):
        raise ImageFileProblem(
            "image_outside_root", f"file_name {file_name!r} leads outside the image folder"
        )
    if not os.path.isfile(path):
        raise ImageFileProblem(
            "missing_image_file", f"file_name {file_name!r} is not a file in the image folder"
        )
    return path


def _plain_file_under(root: Path, file_name: str) -> Path | None:
    """``root / file_name`` when that is a regular file reached through no symlink and no ``..`` (so it
    is what ``resolve()`` gives, inside ``root``), found with one ``lstat`` per part of ``file_name``
    instead of one per part of the whole path; None when ``resolve()`` must decide (or say what is wrong)."""
    parts = PurePosixPath(file_name).parts
    if os.name != "posix" or not parts or parts[0] == "/" or ".." in parts or "\0" in file_name:
        return None
    path = str(root).rstrip("/")
    for part in parts:
        path = f"{path}/{part}"
        try:
            mode = os.lstat(path).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return None
    return Path(path) if stat.S_ISREG(mode) else None


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_ends_with_pixels(path: Path) -> bool:
    """Whether a PNG file has no chunk after its pixel data (IDAT) but IEND, found by walking the chunk
    headers only. Then everything PIL would read as EXIF or XMP was read with the header, and the
    orientation needs no decode; otherwise (or for a damaged file) PIL must load it to find out."""
    seen_pixels = False
    with open(path, "rb") as f:
        if f.read(8) != _PNG_SIGNATURE:
            return False
        while len(header := f.read(8)) == 8:
            length, kind = int.from_bytes(header[:4], "big"), header[4:]
            if kind == b"IEND":
                return seen_pixels
            if kind != b"IDAT" and seen_pixels:
                return False
            seen_pixels = seen_pixels or kind == b"IDAT"
            f.seek(length + 4, os.SEEK_CUR)
    return False


def _exif(image: Image.Image, path: Path) -> Image.Exif:
    """The image's EXIF, without decoding a PNG whose EXIF cannot follow its pixels (PIL's
    `PngImageFile.getexif` decodes every PNG with no EXIF chunk before the pixels, to look after them)."""
    if image.format == "PNG" and "exif" not in image.info and _png_ends_with_pixels(path):
        return Image.Image.getexif(image)
    return image.getexif()


def _orientation(image: Image.Image, path: Path) -> int:
    try:
        return int(_exif(image, path).get(_ORIENTATION, 1))
    except Exception:  # a broken EXIF block: shown as stored
        return 1


def _too_large(height: int, width: int, file_name: str) -> str:
    """`check_pixels`'s complaint about this size, or ''."""
    try:
        check_pixels(height, width, f"image {file_name!r}")
    except ValueError as err:
        return str(err)
    return ""


def upright_size(path: Path, file_name: str) -> tuple[int, int]:
    """(width, height) of the image as shown upright (EXIF orientation applied), from its header."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                too_large = _too_large(height, width, file_name)
                # only then the EXIF block: reading it may decode a PNG whose EXIF follows the pixels
                orientation = 1 if too_large else _orientation(image, path)
    except Image.DecompressionBombError as err:
        raise ImageFileProblem("image_too_large", f"{file_name!r}: {err}") from None
    except Exception as err:  # PIL raises many types for broken files
        raise ImageFileProblem("unreadable_image", f"{file_name!r}: {err}") from None
    if too_large:
        raise ImageFileProblem("image_too_large", too_large)
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def check_image(root: Path, file_name: str, width: int, height: int, *, root_resolved: bool = False) -> Path:
    """The resolved path of an image whose upright size is ``width`` x ``height``; `ImageFileProblem`
    otherwise (outside the root, missing, unreadable, over `MAX_IMAGE_PIXELS`, another size).
    ``root_resolved`` as for `locate_image`."""
    path = locate_image(root, file_name, root_resolved=root_resolved)
    size = upright_size(path, file_name)
    if size != (width, height):
        raise ImageFileProblem(
            "image_size_mismatch",
            f"{file_name!r} is {size[0]}x{size[1]} upright (EXIF orientation applied), "
            f"the annotations say {width}x{height}",
        )
    return path


__all__ = ["MAX_IMAGE_PIXELS", "ImageFileProblem", "check_image", "locate_image", "upright_size"]
