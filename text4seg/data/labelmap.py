"""Semantic records from "images + PNG label maps + a class list" (COCO-Stuff, ADE20K, PASCAL, any such set).

A label map stores one class per pixel as an integer; ``classes[v]`` names pixel value v (None: a value no
class uses). Values in ``ignore`` are never a label: they are background in the descriptor and left out
of scoring (the record's ``ignore`` column holds them as COCO RLE). Palette PNGs are read by index, never
by colour. Every label map is checked before use (size equal to the upright image's, no unknown value);
a bad pair is skipped and reported with its file and reason, as elsewhere in `text4seg.data`.

Options Text4Seg's semantic data uses, each off by default and drawn from a seeded RNG per image: a
random crop, absent "distractor" classes named in the question (all background in the answer), synonyms
for class names, and a cap on the classes one question names.

Images are stored as in the other builds (`text4seg.data.config.IMAGE_STORES`, same default): once in
the build's ``images/`` folder (a random crop, a new image, under ``images/crops/``), embedded in every
record, or as absolute paths (not with crops: a crop has no file to point to).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from text4seg.codec import (
    TEXT4SEG,
    DescriptorFormat,
    format_answer,
    grid_to_text,
    label_map_to_grid,
    mask_to_box,
)
from text4seg.protocol import templates
from text4seg.protocol.images import ImageReadError, check_pixels, load_image
from text4seg.protocol.records import encode_counts

from .classnames import ADE20K_150, COCO_STUFF_BY_VALUE, PASCAL_CONTEXT_59, VOC_20, by_value
from .config import DEFAULT_IMAGE_STORE, IMAGE_STORES, IMAGES_FOLDER
from .spec import Issue, IssueLog

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
QUESTION_STYLES = ("list", "pipe")
"""``list``: our semantic templates ("Segment these classes: a, b and c."); ``pipe``: the class names
joined by `` | ``, the way Text4Seg's semantic questions list them."""


class LabelMapError(ValueError):
    """A label map that cannot be used (the message names the file and why)."""


@dataclass(frozen=True)
class LabelMapOptions:
    """How semantic records are made from a label map.

    ``grid``: descriptor cells (int or (rows, cols)); ``crop``: when set, a random crop whose sides are
    at least this fraction of the image's; ``distractors``: up to this many absent classes added to the
    question; ``synonyms``: class name -> alternative names, one drawn per record; ``max_classes``: at
    most this many present classes named per question (the others become background); ``question_style``:
    one of `QUESTION_STYLES`; ``seed``: with the image's name, seeds every random choice.
    """

    grid: int | tuple[int, int] = 32
    crop: float | None = None
    distractors: int = 0
    synonyms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    max_classes: int | None = None
    question_style: str = "list"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.crop is not None and not 0.1 <= self.crop <= 1.0:
            raise ValueError(f"crop must be a fraction in [0.1, 1], got {self.crop}")
        if self.distractors < 0 or (self.max_classes is not None and self.max_classes < 1):
            raise ValueError("distractors must be >= 0 and max_classes >= 1")
        if self.question_style not in QUESTION_STYLES:
            raise ValueError(f"question_style must be one of {QUESTION_STYLES}, got {self.question_style!r}")

    @property
    def fmt(self) -> DescriptorFormat:
        return TEXT4SEG.with_grid(self.grid)


@dataclass(frozen=True)
class LabelMapSet:
    """Where the pairs are and what their values mean."""

    name: str
    split: str
    images: Path
    labels: Path
    classes: tuple[str | None, ...]
    ignore: tuple[int, ...] = (255,)
    ids: tuple[str, ...] | None = None  # image stems to use (a split list); None: every label map


def read_classes(path: str | Path) -> tuple[str | None, ...]:
    """A class file: line k names pixel value k; an empty line marks a value no class uses."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    names = tuple(line.strip() or None for line in lines)
    if not any(names):
        raise LabelMapError(f"{path}: no class names")
    named = [n for n in names if n]
    if len(set(named)) != len(named):
        raise LabelMapError(f"{path}: a class name is repeated")
    return names


def read_label_map(path: str | Path) -> np.ndarray:
    """A label PNG as an H×W int array of stored values (palette images by index, never by colour)."""
    try:
        with Image.open(path) as image:
            check_pixels(image.height, image.width, str(path))
            if image.mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L"):
                raise LabelMapError(f"{path}: a {image.mode} image, not a label map (palette or grayscale)")
            return np.asarray(image).astype(np.int64)
    except (OSError, ValueError) as err:
        if isinstance(err, LabelMapError):
            raise
        raise LabelMapError(f"{path}: cannot read the label map ({err})") from err


def pairs(data: LabelMapSet, log: IssueLog) -> list[tuple[str, Path, Path]]:
    """(stem, image path, label path) for each label map with an image; the others are reported."""
    labels = {p.stem: p for p in sorted(data.labels.glob("*.png"))}
    images = {p.stem: p for p in sorted(data.images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    stems = data.ids if data.ids is not None else tuple(labels)
    found = []
    for stem in stems:
        if stem not in labels:
            log.add(stem, "missing_label_map", f"no {stem}.png", data.labels)
        elif stem not in images:
            log.add(stem, "missing_image", f"no image named {stem}.*", data.images)
        else:
            found.append((stem, images[stem], labels[stem]))
    return found


def _rng(options: LabelMapOptions, stem: str) -> np.random.Generator:
    return np.random.default_rng([options.seed, zlib.crc32(stem.encode("utf-8"))])


def _crop(rng: np.random.Generator, image: Image.Image, values: np.ndarray, fraction: float):
    height, width = values.shape
    h = int(rng.integers(max(1, int(height * fraction)), height + 1))
    w = int(rng.integers(max(1, int(width * fraction)), width + 1))
    top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
    return image.crop((left, top, left + w, top + h)), values[top : top + h, left : left + w]


def _check_values(values: np.ndarray, data: LabelMapSet, label_path: Path) -> None:
    found = np.unique(values)
    known = {v for v, name in enumerate(data.classes) if name} | set(data.ignore)
    unknown = [int(v) for v in found if int(v) not in known]
    if unknown:
        raise LabelMapError(f"{label_path}: values {unknown[:8]} are neither a class nor ignored")


@dataclass
class _Choice:
    asked: list[int]  # class values named in the question, in order
    shown: list[int]  # the asked values present in the image (get cells)


def _choose(rng: np.random.Generator, present: list[int], data: LabelMapSet, opt: LabelMapOptions) -> _Choice:
    shown = list(present)
    if opt.max_classes is not None and len(shown) > opt.max_classes:
        shown = sorted(rng.choice(shown, opt.max_classes, replace=False).tolist())
    absent = [v for v, name in enumerate(data.classes) if name and v not in present and v not in data.ignore]
    extra = min(opt.distractors, len(absent))
    distractors = rng.choice(absent, extra, replace=False).tolist() if extra else []
    asked = [int(v) for v in rng.permutation(shown + distractors)] if distractors else shown
    return _Choice(asked, shown)


def _name(rng: np.random.Generator, name: str, synonyms: dict[str, tuple[str, ...]]) -> str:
    options = (name, *synonyms.get(name, ()))
    return options[int(rng.integers(len(options)))]


def make_record(
    stem: str, image_path: Path, label_path: Path, data: LabelMapSet, opt: LabelMapOptions
) -> dict:
    """One semantic record for an image and its label map; `LabelMapError` / `ImageReadError` if unusable."""
    image = load_image(image_path)
    values = read_label_map(label_path)
    if values.shape != (image.height, image.width):
        raise LabelMapError(
            f"{label_path}: label map is {values.shape[1]}×{values.shape[0]}, image is {image.width}×{image.height}"
        )
    _check_values(values, data, label_path)
    rng = _rng(opt, stem)
    if opt.crop is not None:
        image, values = _crop(rng, image, values, opt.crop)
    ignored = np.isin(values, data.ignore)
    present = [int(v) for v in np.unique(values[~ignored])]
    choice = _choose(rng, present, data, opt)
    if not choice.asked:
        raise LabelMapError(f"{label_path}: no class to ask for (every pixel is ignored)")
    names = [_name(rng, data.classes[v], opt.synonyms) for v in choice.asked]
    index = np.zeros(values.shape, dtype=np.int32)
    for k, v in enumerate(choice.asked, start=1):
        index[values == v] = k
    return _record(stem, image, image_path, index, ignored, names, data, opt, rng)


def _record(stem, image, image_path, index, ignored, names, data, opt, rng) -> dict:
    fmt = opt.fmt
    labels = [fmt.background, *names]
    grid = label_map_to_grid(index, (fmt.rows, fmt.cols))
    masks = [index == k for k in range(1, len(labels))]
    present = tuple(bool(m.any()) for m in masks)
    turn = templates.render(rng, "semantic", "subset", ", ".join(names), tuple(names), present)
    question = " | ".join(names) if opt.question_style == "pipe" else turn.question
    box = mask_to_box(index > 0)
    return {
        "id": f"{data.name}/{data.split}/{stem}",
        "images": [_image_value(image, image_path, opt)],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "text": None}, {"type": "text", "text": question}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": format_answer(turn.answer, grid_to_text(grid, labels, fmt), fmt)}
                ],
            },
        ],
        "task": "semantic",
        "expression": ", ".join(names),
        "labels": labels,
        "grid": [fmt.rows, fmt.cols],
        "width": image.width,
        "height": image.height,
        "masks": [encode_counts(m) for m in masks],
        "box": list(box) if box is not None else [],
        "ignore": encode_counts(ignored) if ignored.any() else "",
        "source": {
            "dataset": data.name,
            "split": data.split,
            "image_id": zlib.crc32(stem.encode("utf-8")),
            "ann_ids": [],
            "ref_id": -1,
            "sent_id": -1,
            "file_name": image_path.name,
        },
    }


def _image_value(image: Image.Image, path: Path, opt: LabelMapOptions) -> dict:
    if opt.crop is None:
        return {"path": str(path), "bytes": None}
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"path": None, "bytes": buffer.getvalue()}


def iter_records(data: LabelMapSet, opt: LabelMapOptions, log: IssueLog) -> Iterator[dict]:
    """Every usable pair's record, in stem order; unusable pairs are added to `log` and skipped."""
    for stem, image_path, label_path in pairs(data, log):
        try:
            yield make_record(stem, image_path, label_path, data, opt)
        except (LabelMapError, ImageReadError) as err:
            log.add(
                stem, "bad_label_map" if isinstance(err, LabelMapError) else "bad_image", str(err), label_path
            )


# -- the real folder layouts -------------------------------------------------------------------------
def _stems(list_file: Path) -> tuple[str, ...]:
    if not list_file.is_file():
        raise LabelMapError(f"{list_file}: split list not found")
    return tuple(line.strip() for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip())


def _cocostuff(root: Path, split: str) -> LabelMapSet:
    return LabelMapSet(
        "cocostuff",
        split,
        root / f"{split}2017",
        root / "stuffthingmaps_trainval2017" / f"{split}2017",
        COCO_STUFF_BY_VALUE,
        ignore=(255,),
    )


def _ade20k(root: Path, split: str) -> LabelMapSet:
    folder = {"train": "training", "val": "validation"}[split]
    base = root / "ADEChallengeData2016"
    return LabelMapSet(
        "ade20k",
        split,
        base / "images" / folder,
        base / "annotations" / folder,
        by_value(ADE20K_150),
        ignore=(0,),
    )


def _pascal_context(root: Path, split: str) -> LabelMapSet:
    base = root / "VOCdevkit" / "VOC2010"
    return LabelMapSet(
        "pascal-context",
        split,
        base / "JPEGImages",
        base / "SegmentationClassContext",
        by_value(PASCAL_CONTEXT_59),
        ignore=(0, 255),
        ids=_stems(base / "ImageSets" / "SegmentationContext" / f"{split}.txt"),
    )


def _voc(root: Path, split: str) -> LabelMapSet:
    base = root / "VOCdevkit" / "VOC2012"
    return LabelMapSet(
        "voc",
        split,
        base / "JPEGImages",
        base / "SegmentationClass",
        by_value(VOC_20),
        ignore=(0, 255),
        ids=_stems(base / "ImageSets" / "Segmentation" / f"{split}.txt"),
    )


PRESETS = {"cocostuff": _cocostuff, "ade20k": _ade20k, "pascal-context": _pascal_context, "voc": _voc}
"""Preset name -> builder of its `LabelMapSet` from the dataset root and a split (train or val):

* ``cocostuff``: ROOT/{split}2017/*.jpg and ROOT/stuffthingmaps_trainval2017/{split}2017/*.png, values
  0-181 (COCO id - 1, 171 used), 255 unlabeled;
* ``ade20k``: ROOT/ADEChallengeData2016/{images,annotations}/{training,validation}, 0 = other (ignored),
  1-150 the classes;
* ``pascal-context``: ROOT/VOCdevkit/VOC2010/{JPEGImages,SegmentationClassContext}, split lists in
  ImageSets/SegmentationContext/{split}.txt, 0 = background (ignored), 1-59 the classes;
* ``voc``: ROOT/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass} (palette PNGs), split lists in
  ImageSets/Segmentation/{split}.txt, 0 = background and 255 = boundary (ignored), 1-20 the classes.
"""


def preset(name: str, root: str | Path, split: str) -> LabelMapSet:
    """The `LabelMapSet` of a preset (see `PRESETS`); ValueError for an unknown name or split."""
    if name not in PRESETS:
        raise ValueError(f"unknown label-map preset {name!r}; known: {sorted(PRESETS)}")
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    return PRESETS[name](Path(root), split)


# -- writing -----------------------------------------------------------------------------------------
class _ImageStore:
    """A record's ``images`` value in one of `IMAGE_STORES`; for ``folder``, the files to store once
    (path in the build -> source file; crops are written to ``crops`` first)."""

    def __init__(self, kind: str, crops: Path | None) -> None:
        self.kind = kind
        self.crops = crops
        self.files: dict[str, Path] = {}

    def value(self, image: dict, set_index: int, stem: str) -> dict | str:
        if self.kind == "embed":
            return image
        if image["bytes"] is None:
            source = Path(image["path"])
            if self.kind == "paths":
                return str(source.resolve())
            relative = f"{IMAGES_FOLDER}/{source.name}"
        else:  # a crop: a new image, written once where the folder store finds it
            relative = f"{IMAGES_FOLDER}/crops/{set_index}/{stem}.png"
            source = self.crops / relative
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(image["bytes"])
        if self.files.setdefault(relative, source) != source:
            raise LabelMapError(
                f"{relative} would hold both {self.files[relative]} and {source}; build them apart"
            )
        return relative


def _check_store(image_store: str, options: LabelMapOptions) -> None:
    if image_store not in IMAGE_STORES:
        raise ValueError(f"image_store must be one of {IMAGE_STORES}, got {image_store!r}")
    if image_store == "paths" and options.crop is not None:
        raise ValueError(
            "random crops are new images with no file to point to: store them 'folder' or 'embed'"
        )


def build_labelmaps(
    sets: list[LabelMapSet],
    options: LabelMapOptions,
    out_dir: str | Path,
    *,
    strict: bool = False,
    progress: bool = True,
    image_store: str = DEFAULT_IMAGE_STORE,
    copy_images: bool = False,
) -> dict:
    """Write the records of every set (one split each) to ``out_dir`` as a `datasets.DatasetDict`, with a
    build_report.json listing each skipped pair; written atomically. ``image_store``: one of
    `IMAGE_STORES`, the default of the other builds (``folder``: each image once in ``out_dir/images``,
    hard-linked to its source where possible, ``copy_images``: always copied; read the build with
    `text4seg.data.load_records`). Returns the report."""
    import tempfile

    from datasets import Dataset, DatasetDict

    from text4seg.protocol.records import record_features

    from .storage import SplitTables, check_out_dir, save_atomically

    _check_store(image_store, options)
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tables = SplitTables(record_features(image_paths=image_store != "embed").arrow_schema)
    log = IssueLog(strict)
    with tempfile.TemporaryDirectory(prefix=f"{out_dir.name}.crops-", dir=out_dir.parent) as crops:
        store = _ImageStore(image_store, Path(crops))
        _add_records(sets, options, tables, log, store, progress)
        dataset = DatasetDict({split: Dataset(table) for split, table in tables.finish().items()})
        report = {**_report(sets, options, tables, log, image_store), "images_stored": len(store.files)}
        return save_atomically(dataset, out_dir, report, not progress, store.files, not copy_images)


def _add_records(sets, options, tables, log: IssueLog, store: _ImageStore, progress: bool) -> None:
    from tqdm.auto import tqdm

    for set_index, data in enumerate(sets):
        records = iter_records(data, options, log)
        for record in tqdm(records, desc=f"{data.name}/{data.split}", disable=not progress):
            stem = record["id"].rsplit("/", 1)[-1]
            record["images"] = [store.value(image, set_index, stem) for image in record["images"]]
            tables.add(record)


def _report(
    sets: list[LabelMapSet], options: LabelMapOptions, tables, log: IssueLog, image_store: str
) -> dict:
    from .storage import report_counts

    return {
        "kind": "labelmap",
        "sets": [
            {
                "name": s.name,
                "split": s.split,
                "images": str(s.images),
                "labels": str(s.labels),
                "ignore": list(s.ignore),
            }
            for s in sets
        ],
        "config": {
            **{k: v for k, v in options.__dict__.items() if k != "synonyms"},
            "grid": list(options.fmt.grid),
            "synonyms": len(options.synonyms),
            "image_store": image_store,
        },
        **report_counts(tables, log.items),
    }


__all__ = [
    "PRESETS",
    "QUESTION_STYLES",
    "Issue",
    "LabelMapError",
    "LabelMapOptions",
    "LabelMapSet",
    "iter_records",
    "make_record",
    "build_labelmaps",
    "pairs",
    "preset",
    "read_classes",
    "read_label_map",
]
