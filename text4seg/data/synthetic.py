"""Small, real-format segmentation datasets of coloured shapes, for tests, demos and benchmarks.

Two faces share one drawing routine:

* `generate_sample` / `iter_samples` make images, masks and referring expressions in memory
  (what the demo needs to show something quickly);
* `make_synthetic` writes a folder laid out like the real datasets, so that every loader is
  exercised on files and not on shortcuts::

      out_dir/images/synth_000001.jpg ...    JPEG for most images, PNG for some
      out_dir/instances.json                 COCO instances of all images (RefCOCO layout)
      out_dir/instances_{split}.json         the same, one file per split (COCO layout)
      out_dir/refs(unc).p                    RefCOCO-style pickle (protocol 2, like the originals)
      out_dir/grefs(unc).json                gRefCOCO-style refs: multi-target and no-target

Annotations use all three COCO segmentation encodings (polygons for most, some uncompressed and
some compressed RLE) and some images carry an ``iscrowd`` cluster of tiny shapes. Every mask is
rasterised by pycocotools from the shape's polygon and the image is painted through that mask, so
the pixels, the in-memory masks and what a loader decodes from the files all agree exactly.

Everything is deterministic per seed: image ``i`` draws from ``numpy.random.default_rng([seed, i])``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .masks import decode_rle
from .storage import file_digest

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (235, 205, 30),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
}
"""Colour names used in expressions, with their RGB fill."""

KINDS: tuple[str, ...] = ("circle", "square", "triangle", "star", "pentagon", "hexagon")
"""Shape kinds; each is one COCO category."""

CATEGORY_IDS: dict[str, int] = dict(zip(KINDS, (1, 2, 3, 5, 8, 13), strict=True))
"""COCO category id per kind; deliberately not contiguous, as in real COCO."""

SIZES: dict[str, tuple[float, float]] = {"small": (0.07, 0.10), "large": (0.15, 0.21)}
"""Radius range per size word, as a fraction of the shorter image side."""

DEFAULT_SPLITS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}

SYNTHETIC_VERSION = 2
"""Bumped whenever the drawing or file writing changes what a given seed produces."""


@dataclass(frozen=True)
class Shape:
    """One annotated object: a single shape, or (``crowd``) a cluster of tiny shapes."""

    kind: str
    color: str
    size: str
    center: tuple[float, float]
    radius: float
    polygons: tuple[tuple[float, ...], ...]
    """COCO polygons ``[x0, y0, x1, y1, ...]`` in pixel coordinates (several for a crowd)."""
    mask: np.ndarray = field(repr=False)
    """Boolean H×W mask, exactly what pycocotools rasterises from ``polygons``."""
    crowd: bool = False

    @property
    def category_id(self) -> int:
        return CATEGORY_IDS[self.kind]


@dataclass(frozen=True)
class Expression:
    """A referring expression: some sentences and the shapes (indices) they refer to.

    ``targets`` is empty for a no-target expression (gRefCOCO style), has several entries for a
    multi-target one ("all red shapes") and one entry otherwise.
    """

    sentences: tuple[str, ...]
    targets: tuple[int, ...]

    @property
    def kind(self) -> str:
        """``single``, ``multi`` or ``none``."""
        return {0: "none", 1: "single"}.get(len(self.targets), "multi")


@dataclass
class SyntheticSample:
    """One synthetic image with its objects and expressions."""

    image: np.ndarray
    """H×W×3 uint8 RGB."""
    shapes: list[Shape]
    expressions: list[Expression]
    """Single-target expressions first (one per non-crowd shape that can be described), then
    multi-target ones, then one no-target expression."""

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def mask(self, expression: Expression) -> np.ndarray:
        """Union of the target masks of ``expression`` (all False when it has no target)."""
        out = np.zeros(self.image.shape[:2], dtype=bool)
        for index in expression.targets:
            out |= self.shapes[index].mask
        return out


@dataclass(frozen=True)
class SyntheticPaths:
    """Where `make_synthetic` wrote things."""

    root: Path
    images: Path
    instances: Path
    instances_by_split: dict[str, Path]
    refs: Path
    grefs: Path
    num_images: int
    num_annotations: int
    num_refs: int
    num_grefs: int


def _as_size(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    width, height = image_size
    return int(width), int(height)


def shape_polygon(kind: str, cx: float, cy: float, radius: float, angle: float = 0.0) -> list[float]:
    """Vertices of a shape of circumradius ``radius`` centred at (cx, cy), as a flat COCO polygon."""
    if kind == "circle":
        n, radii, start = 36, [radius], 0.0
    elif kind == "square":
        n, radii, start = 4, [radius], math.pi / 4
    elif kind == "triangle":
        n, radii, start = 3, [radius], -math.pi / 2
    elif kind == "star":
        n, radii, start = 10, [radius, radius * 0.45], -math.pi / 2
    elif kind == "pentagon":
        n, radii, start = 5, [radius], -math.pi / 2
    elif kind == "hexagon":
        n, radii, start = 6, [radius], 0.0
    else:
        raise ValueError(f"unknown shape kind {kind!r}; expected one of {KINDS}")
    points: list[float] = []
    for k in range(n):
        theta = start + angle + 2 * math.pi * k / n
        r = radii[k % len(radii)]
        points += [round(cx + r * math.cos(theta), 2), round(cy + r * math.sin(theta), 2)]
    return points


def _rasterise(polygons: Sequence[Sequence[float]], height: int, width: int) -> np.ndarray:
    rles = mask_utils.frPyObjects([list(p) for p in polygons], height, width)
    return decode_rle(mask_utils.merge(rles)).astype(bool)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted, textured background (float32 H×W×3); textures broadcast from 1-D axes for speed."""
    base = (rng.uniform(95, 190) + rng.uniform(-18, 18, size=3)).astype(np.float32)
    xs = np.arange(width, dtype=np.float32)[None, :]
    ys = np.arange(height, dtype=np.float32)[:, None]
    style = int(rng.integers(4))
    if style == 0:  # linear gradient
        direction = rng.uniform(0, 2 * math.pi)
        scale = rng.uniform(25, 60) / max(height, width)
        tex = xs * np.float32(math.cos(direction) * scale) + ys * np.float32(math.sin(direction) * scale)
    elif style == 1:  # stripes
        period = rng.uniform(8, 24)
        direction = rng.uniform(0, math.pi)
        step = 2 * math.pi / period
        phase = xs * np.float32(math.cos(direction) * step) + ys * np.float32(math.sin(direction) * step)
        tex = np.sin(phase) * np.float32(rng.uniform(8, 20))
    elif style == 2:  # checker
        cell = int(rng.integers(10, 32))
        tex = ((xs // cell + ys // cell) % 2) * np.float32(rng.uniform(10, 25))
    else:  # blotches: coarse noise, upsampled
        coarse = rng.normal(0, 1, size=(max(2, height // 24), max(2, width // 24))).astype(np.float32)
        tex_img = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        tex = np.asarray(tex_img, dtype=np.float32) * np.float32(rng.uniform(10, 22))
    return tex[..., None] + base


def _place(
    rng: np.random.Generator,
    radius: float,
    placed: list[tuple[float, float, float]],
    width: int,
    height: int,
    margin: float,
) -> tuple[float, float] | None:
    """A centre for a shape of ``radius`` that overlaps no placed shape, or None."""
    for _ in range(60):
        cx = rng.uniform(radius + 1, width - radius - 1)
        cy = rng.uniform(radius + 1, height - radius - 1)
        if all(math.hypot(cx - x, cy - y) > radius + r + margin for x, y, r in placed):
            return cx, cy
    return None


def _specs(rng: np.random.Generator, distractor: bool) -> list[tuple[str, str, str]]:
    """(kind, colour, size) of the 1-3 shapes of an image; with ``distractor``, two of them share
    a kind, a colour, or both."""
    count = int(rng.integers(2, 4)) if distractor else int(rng.integers(1, 4))
    colors, sizes = list(COLORS), list(SIZES)
    specs = [(str(rng.choice(KINDS)), str(rng.choice(colors)), str(rng.choice(sizes))) for _ in range(count)]
    if distractor:
        kind, color, _ = specs[0]
        mode = int(rng.integers(3))
        other_kind, other_color, other_size = specs[1]
        if mode == 0:
            specs[1] = (kind, other_color, other_size)
        elif mode == 1:
            specs[1] = (other_kind, color, other_size)
        else:
            specs[1] = (kind, color, other_size)
    return specs


def _order_words(group: list[Shape], axis: int) -> list[str] | None:
    """Position words for shapes of one description, ordered along ``axis`` (0 = x, 1 = y), or
    None when two of them are too close along that axis to tell apart."""
    coords = [s.center[axis] for s in group]
    order = sorted(range(len(group)), key=lambda i: coords[i])
    gaps = [coords[order[k + 1]] - coords[order[k]] for k in range(len(order) - 1)]
    if min(gaps) < 0.5 * max(s.radius for s in group):
        return None
    names = ("left", "middle", "right") if axis == 0 else ("top", "middle", "bottom")
    words = [""] * len(group)
    for rank, index in enumerate(order):
        words[index] = names[0] if rank == 0 else names[2] if rank == len(group) - 1 else names[1]
    return words


def _single_expressions(shapes: list[Shape], rng: np.random.Generator) -> list[Expression]:
    """One expression per describable non-crowd shape, naming colour and kind and, where another
    shape has both, the size or the position."""
    out: list[Expression] = []
    for index, shape in enumerate(shapes):
        if shape.crowd:
            continue
        twins = [
            i
            for i, s in enumerate(shapes)
            if not s.crowd and s.kind == shape.kind and s.color == shape.color and i != index
        ]
        noun = f"{shape.color} {shape.kind}"
        if not twins:
            sentences = [
                f"the {noun}",
                noun,
                f"the {noun} in the picture",
                f"{shape.kind} that is {shape.color}",
            ]
        elif all(shapes[i].size != shape.size for i in twins):
            sentences = [
                f"the {shape.size} {noun}",
                f"{shape.size} {noun}",
                f"the {noun} that is {shape.size}",
            ]
        else:
            group = [shape] + [shapes[i] for i in twins]
            words = _order_words(group, 0)
            if words is None:
                words = _order_words(group, 1)
            if words is None:
                continue
            word = words[0]
            if word == "middle":
                sentences = [f"the middle {noun}", f"the {noun} in the middle"]
            else:
                sentences = [f"the {word} {noun}", f"the {noun} on the {word}", f"{word} {noun}"]
        count = int(rng.integers(1, len(sentences) + 1))
        chosen = [sentences[0]] + [str(t) for t in rng.permutation(sentences[1:])[: count - 1]]
        out.append(Expression(sentences=tuple(chosen), targets=(index,)))
    return out


def _group_expressions(shapes: list[Shape], rng: np.random.Generator) -> list[Expression]:
    """Multi-target expressions (shared colour or kind) and one no-target expression."""
    out: list[Expression] = []
    solid = [i for i, s in enumerate(shapes) if not s.crowd]
    for color in COLORS:
        members = tuple(i for i in solid if shapes[i].color == color)
        if len(members) >= 2:
            both = "both" if len(members) == 2 else "all"
            out.append(
                Expression((f"all {color} shapes", f"the {color} shapes", f"{both} {color} ones"), members)
            )
    for kind in KINDS:
        members = tuple(i for i in solid if shapes[i].kind == kind)
        if len(members) >= 2:
            both = "both" if len(members) == 2 else "all"
            out.append(Expression((f"all {kind}s", f"{both} {kind}s"), members))
    if len(solid) >= 2 and not any(s.crowd for s in shapes):
        out.append(Expression(("all shapes", "every shape in the image"), tuple(solid)))
    present = {(s.kind, s.color) for s in shapes}
    absent = [(k, c) for k in KINDS for c in COLORS if (k, c) not in present]
    kind, color = absent[int(rng.integers(len(absent)))]
    out.append(Expression((f"the {color} {kind}", f"{color} {kind}"), ()))
    return out


def generate_sample(
    seed: int | Sequence[int] | np.random.Generator = 0,
    image_size: int | tuple[int, int] = 256,
    *,
    distractor: bool | None = None,
    crowd: bool | None = None,
) -> SyntheticSample:
    """Draw one image of 1-3 shapes on a textured background, with masks and expressions.

    ``image_size`` is an int (square) or ``(width, height)``. ``distractor`` forces (True) or
    forbids (False) a second shape sharing a kind or colour with the first; ``crowd`` adds a
    crowd cluster of tiny shapes. None lets the RNG decide.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    width, height = _as_size(image_size)
    side = min(width, height)
    if distractor is None:
        distractor = bool(rng.random() < 0.5)
    if crowd is None:
        crowd = bool(rng.random() < 0.2)
    canvas = _background(rng, height, width)
    placed: list[tuple[float, float, float]] = []
    shapes: list[Shape] = []
    for kind, color, size in _specs(rng, distractor):
        low, high = SIZES[size]
        radius = float(rng.uniform(low, high) * side)
        centre = _place(rng, radius, placed, width, height, margin=0.04 * side)
        if centre is None:
            continue
        angle = float(rng.uniform(-0.25, 0.25)) if kind != "circle" else 0.0
        polygon = shape_polygon(kind, centre[0], centre[1], radius, angle)
        mask = _rasterise([polygon], height, width)
        if not mask.any():
            continue
        placed.append((centre[0], centre[1], radius))
        shapes.append(Shape(kind, color, size, centre, radius, (tuple(polygon),), mask))
    if crowd:
        used = {(s.kind, s.color) for s in shapes}
        used_colors = {s.color for s in shapes}
        options = [(k, c) for k in KINDS for c in COLORS if c not in used_colors and (k, c) not in used]
        kind, color = options[int(rng.integers(len(options)))]
        polygons: list[tuple[float, ...]] = []
        tiny = 0.035 * side
        for _ in range(int(rng.integers(4, 7))):
            centre = _place(rng, tiny, placed, width, height, margin=2.0)
            if centre is None:
                break
            placed.append((centre[0], centre[1], tiny))
            polygons.append(tuple(shape_polygon(kind, centre[0], centre[1], tiny)))
        if len(polygons) >= 2:
            mask = _rasterise(polygons, height, width)
            xs = [p[0::2] for p in polygons]
            ys = [p[1::2] for p in polygons]
            centre = (float(np.mean([np.mean(x) for x in xs])), float(np.mean([np.mean(y) for y in ys])))
            shapes.append(Shape(kind, color, "small", centre, tiny, tuple(polygons), mask, crowd=True))
    for shape in shapes:
        fill = np.asarray(COLORS[shape.color], dtype=np.float32) + rng.uniform(-12, 12, size=3)
        canvas[shape.mask] = fill
    sigma = rng.uniform(3, 9)
    noise = rng.integers(0, 256, size=(2, height, width), dtype=np.uint8)  # two uniforms: triangular noise
    canvas += ((noise[0].astype(np.float32) + noise[1] - np.float32(255)) * np.float32(sigma / 104.5))[
        ..., None
    ]
    image = np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)
    expressions = _single_expressions(shapes, rng) + _group_expressions(shapes, rng)
    return SyntheticSample(image=image, shapes=shapes, expressions=expressions)


def iter_samples(
    num: int, seed: int = 0, image_size: int | tuple[int, int] = 256
) -> Iterator[SyntheticSample]:
    """``num`` samples; sample ``i`` is `generate_sample` with ``rng([seed, i])``; every other sample
    has a distractor and every fifth a crowd cluster."""
    for i in range(num):
        yield generate_sample(
            np.random.default_rng([seed, i]), image_size, distractor=(i % 2 == 0), crowd=(i % 5 == 4)
        )


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    flat = np.asfortranarray(mask).reshape(-1, order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def _compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _split_assignment(num_images: int, splits: Mapping[str, float] | Sequence[str], seed: int) -> list[str]:
    """A split name per image with the requested proportions (each split gets >= 1 image when
    there are enough images), shuffled deterministically."""
    if not isinstance(splits, Mapping):
        names = list(splits)
        weights = (
            [DEFAULT_SPLITS[n] for n in names]
            if all(n in DEFAULT_SPLITS for n in names)
            else [1.0] * len(names)
        )
        splits = dict(zip(names, weights, strict=True))
    if not splits:
        raise ValueError("at least one split is needed")
    names = list(splits)
    total = float(sum(splits.values()))
    counts = [int(round(num_images * w / total)) for w in splits.values()]
    if num_images >= len(names):
        counts = [max(1, c) for c in counts]
    while sum(counts) > num_images:
        counts[int(np.argmax(counts))] -= 1
    while sum(counts) < num_images:
        counts[0] += 1
    labels = [name for name, c in zip(names, counts, strict=True) for _ in range(c)]
    order = np.random.default_rng([seed, 0x5EED]).permutation(num_images)
    return [labels[int(k)] for k in order]


def _sentence_dict(text: str, sent_id: int, capitalise: bool) -> dict:
    raw = text[0].upper() + text[1:] + "." if capitalise else text
    return {"tokens": text.split(), "raw": raw, "sent_id": sent_id, "sent": text}


def make_synthetic(
    out_dir: str | Path,
    num_images: int = 200,
    image_size: int | tuple[int, int] = 256,
    seed: int = 0,
    splits: Mapping[str, float] | Sequence[str] = ("train", "val", "test"),
    *,
    png_every: int = 7,
    jpeg_quality: int = 90,
    reuse: bool = False,
) -> SyntheticPaths:
    """Write a synthetic dataset in the COCO / RefCOCO / gRefCOCO file formats to ``out_dir``.

    ``splits`` is a list of split names (train/val/test get 80/10/10, other names equal shares)
    or a mapping name -> weight; splits are assigned per image, as RefCOCO does. Every
    ``png_every``-th image is written as PNG, the rest as JPEG. Annotation ids cycle through the
    encodings: five polygons, one uncompressed RLE, one compressed RLE; crowd clusters use
    uncompressed RLE with ``iscrowd: 1``. The result depends only on the arguments, which are
    recorded in ``synthetic.json``; with ``reuse`` a folder whose manifest matches is returned as is
    (so a re-run keeps file times, and a record build over it can reuse its cache).

    The manifest never describes files it did not write: it is replaced by an ``incomplete`` one
    before the first file is written and completed, with each file's SHA-256, after the last; reuse
    needs a complete manifest whose files all still match.
    """
    root = Path(out_dir)
    size = _as_size(image_size)
    params = {
        "version": SYNTHETIC_VERSION,
        "num_images": num_images,
        "image_size": list(size),
        "seed": seed,
        "splits": dict(splits) if isinstance(splits, Mapping) else list(splits),
        "png_every": png_every,
        "jpeg_quality": jpeg_quality,
    }
    manifest = root / "synthetic.json"
    previous = _read_manifest(manifest) if reuse else None
    if previous is not None and previous.get("params") == params and _files_intact(root, previous):
        return _paths_from_manifest(root, previous)
    (root / "images").mkdir(parents=True, exist_ok=True)
    _write_json_atomically(manifest, {"params": params, "complete": False})
    split_of = _split_assignment(num_images, splits, seed)
    writer = _Writer(root, png_every, jpeg_quality)
    for i, sample in enumerate(iter_samples(num_images, seed=seed, image_size=size)):
        writer.add(i, sample, split_of[i])
    written = writer.save(seed, split_of)
    files = {path.relative_to(root).as_posix(): file_digest(path) for path in written}
    record = {"params": params, "complete": True, **writer.counts(split_of), "files": files}
    _write_json_atomically(manifest, record)
    return _paths_from_manifest(root, record)


def _segmentation(shape: Shape, ann_id: int) -> list | dict:
    """Annotation ids cycle through the encodings: five polygons, uncompressed RLE, compressed RLE."""
    if shape.crowd or ann_id % 7 == 6:
        return _uncompressed_rle(shape.mask)
    if ann_id % 7 == 0:
        return _compressed_rle(shape.mask)
    return [list(p) for p in shape.polygons]


class _Writer:
    """Accumulates the COCO, RefCOCO and gRefCOCO entries of each sample and writes its image."""

    def __init__(self, root: Path, png_every: int, jpeg_quality: int) -> None:
        self.root, self.png_every, self.jpeg_quality = root, png_every, jpeg_quality
        self.images: list[dict] = []
        self.annotations: list[dict] = []
        self.refs: list[dict] = []
        self.grefs: list[dict] = []
        self.sent_id = self.gsent_id = 0

    def add(self, i: int, sample: SyntheticSample, split: str) -> None:
        image_id = i + 1
        suffix = ".png" if self.png_every and i % self.png_every == self.png_every - 1 else ".jpg"
        file_name = f"synth_{image_id:06d}{suffix}"
        pil = Image.fromarray(sample.image)
        if suffix == ".png":
            pil.save(self.root / "images" / file_name, compress_level=1)
        else:
            pil.save(self.root / "images" / file_name, quality=self.jpeg_quality)
        self.images.append(
            {"id": image_id, "file_name": file_name, "width": sample.width, "height": sample.height}
        )
        shape_ann = [self._annotation(image_id, shape) for shape in sample.shapes]
        for expression in sample.expressions:
            targets = [shape_ann[t] for t in expression.targets]
            cats = [sample.shapes[t].category_id for t in expression.targets]
            common = {"image_id": image_id, "split": split, "file_name": file_name}
            if expression.kind == "single":
                self._ref(expression, targets, cats, common)
            self._gref(expression, targets, cats, common)

    def _annotation(self, image_id: int, shape: Shape) -> int:
        ann_id = len(self.annotations) + 1
        encoded = mask_utils.encode(np.asfortranarray(shape.mask.astype(np.uint8)))
        self.annotations.append(
            {
                "id": ann_id,
                "image_id": image_id,
                "category_id": shape.category_id,
                "segmentation": _segmentation(shape, ann_id),
                "area": float(mask_utils.area(encoded)),
                "bbox": [round(float(v), 2) for v in mask_utils.toBbox(encoded)],
                "iscrowd": int(shape.crowd),
            }
        )
        return ann_id

    def _sentences(self, expression: Expression, first_id: int) -> list[dict]:
        return [
            _sentence_dict(text, first_id + k, capitalise=(k % 2 == 1))
            for k, text in enumerate(expression.sentences)
        ]

    def _ref(self, expression: Expression, targets: list[int], cats: list[int], common: dict) -> None:
        sentences = self._sentences(expression, self.sent_id)
        self.sent_id += len(sentences)
        ref = {"ref_id": len(self.refs), "ann_id": targets[0], "image_id": common["image_id"]}
        ref.update(category_id=cats[0], split=common["split"], file_name=common["file_name"])
        self.refs.append({**ref, "sent_ids": [s["sent_id"] for s in sentences], "sentences": sentences})

    def _gref(self, expression: Expression, targets: list[int], cats: list[int], common: dict) -> None:
        sentences = self._sentences(expression, self.gsent_id)
        self.gsent_id += len(sentences)
        none = expression.kind == "none"
        gref = {
            "ref_id": len(self.grefs),
            "ann_id": [-1] if none else targets,
            "image_id": common["image_id"],
        }
        gref.update(category_id=[-1] if none else cats, split=common["split"], file_name=common["file_name"])
        gref.update(sent_ids=[s["sent_id"] for s in sentences], sentences=sentences, no_target=none)
        self.grefs.append(gref)

    def _instances(self, path: Path, seed: int, keep: set[int] | None) -> Path:
        data = {
            "info": {"description": f"text4seg synthetic shapes (seed {seed})", "version": "1.0"},
            "licenses": [],
            "images": [im for im in self.images if keep is None or im["id"] in keep],
            "annotations": [a for a in self.annotations if keep is None or a["image_id"] in keep],
            "categories": [{"id": CATEGORY_IDS[k], "name": k, "supercategory": "shape"} for k in KINDS],
        }
        path.write_text(json.dumps(data), encoding="utf-8")
        return path

    def save(self, seed: int, split_of: list[str]) -> list[Path]:
        """Write the annotation files; return every file written (images included)."""
        written = [self.root / "images" / im["file_name"] for im in self.images]
        written.append(self._instances(self.root / "instances.json", seed, None))
        for split in dict.fromkeys(split_of):
            keep = {i + 1 for i, s in enumerate(split_of) if s == split}
            written.append(self._instances(self.root / f"instances_{split}.json", seed, keep))
        with (self.root / "refs(unc).p").open("wb") as handle:
            pickle.dump(self.refs, handle, protocol=2)
        (self.root / "grefs(unc).json").write_text(json.dumps(self.grefs), encoding="utf-8")
        return [*written, self.root / "refs(unc).p", self.root / "grefs(unc).json"]

    def counts(self, split_of: list[str]) -> dict:
        return {
            "splits_written": list(dict.fromkeys(split_of)),
            "num_annotations": len(self.annotations),
            "num_refs": len(self.refs),
            "num_grefs": len(self.grefs),
        }


def _write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def _read_manifest(path: Path) -> dict | None:
    """A complete manifest, or None (missing, unreadable, or left incomplete by an interrupted write)."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    complete = isinstance(manifest, dict) and manifest.get("complete") is True
    return manifest if complete and isinstance(manifest.get("files"), dict) else None


def _files_intact(root: Path, manifest: dict) -> bool:
    """True when every file the manifest lists is there with the digest it recorded."""
    root = root.resolve()
    for name, digest in manifest["files"].items():
        path = (root / str(name)).resolve()
        if not path.is_relative_to(root) or not path.is_file() or file_digest(path) != digest:
            return False
    return True


def _paths_from_manifest(root: Path, manifest: dict) -> SyntheticPaths:
    return SyntheticPaths(
        root=root,
        images=root / "images",
        instances=root / "instances.json",
        instances_by_split={split: root / f"instances_{split}.json" for split in manifest["splits_written"]},
        refs=root / "refs(unc).p",
        grefs=root / "grefs(unc).json",
        num_images=manifest["params"]["num_images"],
        num_annotations=manifest["num_annotations"],
        num_refs=manifest["num_refs"],
        num_grefs=manifest["num_grefs"],
    )
