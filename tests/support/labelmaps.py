"""Tiny label-map datasets written in the real folder layouts of the `text4seg.data.labelmap` presets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from text4seg.data.labelmap import LabelMapSet, preset

H, W = 24, 32


def label_values(seed: int, values: list[int], ignore: int | None = None) -> np.ndarray:
    """An H×W map: left half values[0], right half values[1] (if any), a 2-pixel `ignore` border."""
    out = np.full((H, W), values[0], dtype=np.uint8)
    if len(values) > 1:
        out[:, W // 2 + seed % 3 :] = values[1]
    if ignore is not None:
        out[:2, :] = ignore
    return out


def _image(values: np.ndarray) -> Image.Image:
    v = values.astype(np.int64)
    rgb = np.stack([v * 7 % 256, v * 13 % 256, v * 29 % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


def _split_list(data: LabelMapSet, stems: list[str]) -> None:
    """The split list file a preset reads (PASCAL layouts), next to JPEGImages under ImageSets/."""
    if data.name == "voc":
        path = data.images.parent / "ImageSets" / "Segmentation" / f"{data.split}.txt"
    elif data.name == "pascal-context":
        path = data.images.parent / "ImageSets" / "SegmentationContext" / f"{data.split}.txt"
    else:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{s}\n" for s in stems))


def write_preset(name: str, root: Path, split: str, maps: dict[str, np.ndarray]) -> LabelMapSet:
    """Write .jpg images and label PNGs in the layout of preset `name` (VOC's label maps are palette PNGs,
    as in its release); returns the preset's `LabelMapSet`."""
    first = Path(root)
    if name in ("voc", "pascal-context"):
        _split_list(_layout(name, first, split), list(maps))
    data = preset(name, first, split)
    data.images.mkdir(parents=True, exist_ok=True)
    data.labels.mkdir(parents=True, exist_ok=True)
    for stem, values in maps.items():
        _image(values).save(data.images / f"{stem}.jpg", quality=95)
        height, width = values.shape
        label = Image.frombytes("P" if name == "voc" else "L", (width, height), values.tobytes())
        if name == "voc":  # palette colours unrelated to the indices: the reader must use the index
            label.putpalette([(i * 37) % 256 for i in range(768)])
        label.save(data.labels / f"{stem}.png")
    return data


def _layout(name: str, root: Path, split: str) -> LabelMapSet:
    """The preset's folders without reading its split list (which does not exist yet)."""
    base = root / "VOCdevkit" / ("VOC2012" if name == "voc" else "VOC2010")
    return LabelMapSet(name, split, base / "JPEGImages", base / "unused", ())
