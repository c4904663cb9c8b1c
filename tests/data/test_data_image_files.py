"""Image files: never read outside the image folder, sized upright by the EXIF rule, refused when
larger than MAX_IMAGE_PIXELS before anything is decoded."""

from __future__ import annotations

import json
import shutil
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from text4seg.data.image_files import ImageFileProblem, check_image, locate_image, upright_size

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _png_header(path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` (no pixel data: only the header is ever read)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def _hostile_names(paths) -> dict[str, str]:
    """file_name values that lead outside the image folder, each pointing at a real image of the right size."""
    outside = paths.root / "outside"
    outside.mkdir()
    instances = json.loads(paths.instances.read_text())
    first = instances["images"][0]["file_name"]
    shutil.copy(paths.images / first, outside / "secret.jpg")
    (paths.images / "link.jpg").symlink_to(outside / "secret.jpg")
    return {
        "relative": "../outside/secret.jpg",
        "absolute": str((outside / "secret.jpg").resolve()),
        "symlink": "link.jpg",
    }


def test_file_names_leaving_the_image_folder_are_refused(corrupt_copy, build_kind, tmp_path):
    paths = corrupt_copy()
    names = _hostile_names(paths)
    instances = json.loads(paths.instances.read_text())
    hostile = {}
    for image, name in zip(instances["images"][: len(names)], names.values(), strict=True):
        hostile[image["id"]] = name
        image["file_name"] = name
    paths.instances.write_text(json.dumps(instances))
    result = build_kind("refcoco", paths, tmp_path / "out")
    outside = [item for item in result.report["skipped"] if item["reason"] == "image_outside_root"]
    for image_id, name in hostile.items():
        details = [item["detail"] for item in outside if f"image {image_id}:" in item["detail"]]
        assert details and all(repr(name) in d for d in details), (image_id, name)
    assert not any(
        str(paths.root / "outside") in item["detail"] for item in outside if "../" in item["detail"]
    )
    for split in result.dataset.values():
        assert not set(split["source"]["image_id"]) & set(hostile)
    # nothing from outside the image folder was stored in the build (each image once, under images/)
    stored = {p.name for p in (tmp_path / "out" / "images").rglob("*")}
    assert stored and not stored & {"secret.jpg", "link.jpg", "outside"}


def test_locate_image_names_the_file_as_given(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(ImageFileProblem) as info:
        locate_image(tmp_path / "images", "../../etc/passwd")
    assert info.value.reason == "image_outside_root"
    assert "'../../etc/passwd'" in str(info.value) and str(tmp_path) not in str(info.value)
    with pytest.raises(ImageFileProblem, match="missing_image_file"):
        locate_image(tmp_path / "images", "absent.jpg")
    with pytest.raises(ImageFileProblem, match="bad_image_path"):
        locate_image(tmp_path / "images", "nul\x00.jpg")


def test_located_paths_are_what_resolve_gives_whatever_the_route(tmp_path):
    root, outside = tmp_path / "images", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    for folder in (root, root / "sub", outside):
        (folder / "a.jpg").write_bytes(b"x")
    (root / "inner_link").symlink_to(root / "sub")  # a link that stays inside is followed
    (root / "outer_link").symlink_to(outside)
    (root / "sub" / "file_link.jpg").symlink_to(outside / "a.jpg")
    inside = ["a.jpg", "sub/a.jpg", "./sub//a.jpg", "inner_link/a.jpg", "sub/../a.jpg"]
    for name in inside:
        for resolved in (False, True):
            given = root.resolve() if resolved else root
            assert locate_image(given, name, root_resolved=resolved) == (root / name).resolve(), name
    for name in ("outer_link/a.jpg", "sub/file_link.jpg", "sub/../../outside/a.jpg"):
        with pytest.raises(ImageFileProblem, match="image_outside_root"):
            locate_image(root, name)
    for name in ("sub", "sub/", "missing/a.jpg"):
        with pytest.raises(ImageFileProblem, match="missing_image_file"):
            locate_image(root, name)


def test_size_is_the_upright_size(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: shown 20 wide, 40 high
    Image.new("RGB", (40, 20)).save(path, exif=exif)
    assert upright_size(path, "rotated.jpg") == (20, 40)
    assert check_image(tmp_path, "rotated.jpg", 20, 40) == path.resolve()
    with pytest.raises(ImageFileProblem) as info:
        check_image(tmp_path, "rotated.jpg", 40, 20)
    assert info.value.reason == "image_size_mismatch" and "upright" in info.value.detail


@pytest.mark.parametrize("side", [12_000, 30_000])  # over our limit; over PIL's bomb limit too
def test_huge_images_are_refused_from_the_header(tmp_path, side):
    _png_header(tmp_path / "huge.png", side, side)
    with pytest.raises(ImageFileProblem) as info:
        upright_size(tmp_path / "huge.png", "huge.png")
    assert info.value.reason == "image_too_large"


def _png_with_exif_after_pixels(path, orientation: int) -> None:
    """A 40×20 PNG whose eXIf chunk comes after IDAT, as PNG allows."""
    Image.new("RGB", (40, 20)).save(path)
    data = path.read_bytes()
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()
    chunk = (
        struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    )
    iend = data.rindex(b"IEND") - 4
    path.write_bytes(data[:iend] + chunk + data[iend:])


@pytest.mark.parametrize("orientation, size", [(6, (20, 40)), (1, (40, 20))])
def test_png_orientation_after_the_pixels_is_still_read(tmp_path, orientation, size):
    _png_with_exif_after_pixels(tmp_path / "late.png", orientation)
    with Image.open(tmp_path / "late.png") as image:
        assert image.size == (40, 20) and "exif" not in image.info  # not seen from the header alone
    assert upright_size(tmp_path / "late.png", "late.png") == size


def test_plain_png_is_sized_without_decoding_its_pixels(tmp_path, monkeypatch):
    Image.new("RGB", (40, 20)).save(tmp_path / "plain.png")
    loads = []
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: loads.append(1))
    assert upright_size(tmp_path / "plain.png", "plain.png") == (40, 20)
    assert not loads


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def _png_with_text(path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", '<x tiff:Orientation="6"/>')
    Image.new("RGB", (40, 20)).save(path, pnginfo=info)


def _damaged(source_writer, cut):
    def write(path):
        source_writer(path)
        path.write_bytes(cut(path.read_bytes()))

    return write


_PLAIN = {  # files the fast path must read itself
    "baseline.jpg": lambda p: Image.new("RGB", (40, 20), "red").save(p),
    "progressive.jpg": lambda p: Image.new("RGB", (33, 17)).save(p, progressive=True),
    "gray.jpg": lambda p: Image.new("L", (16, 48)).save(p),
    "comment.jpg": lambda p: Image.new("RGB", (40, 20)).save(p, comment=b"hello"),
    "rgb.png": lambda p: Image.new("RGB", (40, 20)).save(p),
    "gray16.png": lambda p: Image.new("I;16", (21, 13)).save(p),
    "interlaced.png": lambda p: Image.new("RGB", (12, 7)).save(p, interlace=1),
}
_LEFT_TO_PIL = {  # files the fast path must hand to PIL (orientation, formats, damage)
    "palette.png": lambda p: Image.new("P", (9, 30)).save(p),  # PLTE before the pixels
    "exif6.jpg": lambda p: Image.new("RGB", (40, 20)).save(p, exif=_exif(6)),
    "exif1.jpg": lambda p: Image.new("RGB", (40, 20)).save(p, exif=_exif(1)),
    "cmyk.jpg": lambda p: Image.new("CMYK", (40, 20)).save(p),
    "icc.jpg": lambda p: Image.new("RGB", (40, 20)).save(p, icc_profile=b"\0" * 200),
    "xmp.png": _png_with_text,
    "late_exif.png": lambda p: _png_with_exif_after_pixels(p, 6),
    "exif.png": lambda p: Image.new("RGB", (40, 20)).save(p, exif=_exif(8)),
    "header_only.png": lambda p: _png_header(p, 40, 20),
    "bad_crc.png": _damaged(
        lambda p: Image.new("RGB", (40, 20)).save(p), lambda d: d[:29] + b"\0\0\0\0" + d[33:]
    ),
    "no_frame.jpg": _damaged(lambda p: Image.new("RGB", (40, 20)).save(p), lambda d: d[:20]),
    "bad_tables.jpg": _damaged(
        lambda p: Image.new("RGB", (40, 20)).save(p),
        lambda d: d.replace(b"\xff\xdb\x00\x43", b"\xff\xdb\x00\x40", 1),
    ),
    "image.gif": lambda p: Image.new("P", (40, 20)).save(p),
    "image.bmp": lambda p: Image.new("RGB", (40, 20)).save(p),
}


def _pil_only(path, monkeypatch) -> tuple[int, int] | str:
    """What `upright_size` gives with PIL reading every header (the rule the fast path must keep)."""
    from text4seg.data import image_files

    with monkeypatch.context() as patch:
        patch.setattr(image_files, "plain_header_size", lambda path: None)
        try:
            return upright_size(path, path.name)
        except ImageFileProblem as err:
            return err.reason


@pytest.mark.parametrize("name", sorted({**_PLAIN, **_LEFT_TO_PIL}))
def test_header_fast_path_agrees_with_pil(tmp_path, monkeypatch, name):
    from text4seg.data.image_files import plain_header_size

    path = tmp_path / name
    {**_PLAIN, **_LEFT_TO_PIL}[name](path)
    fast = plain_header_size(path)
    assert (fast is not None) == (name in _PLAIN)
    expected = _pil_only(path, monkeypatch)
    if fast is not None:
        assert fast == expected
    try:
        got: tuple[int, int] | str = upright_size(path, name)
    except ImageFileProblem as err:
        got = err.reason
    assert got == expected
