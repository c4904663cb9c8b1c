"""COCO instances files -> record specs for three tasks.

* ``refer``: "segment the {category}", every instance of the category (crowd regions included)
  merged under the category name;
* ``instance``: one label per non-crowd instance, ``{category} 1``, ``{category} 2``, … numbered
  left to right by box centre (crowd regions stay background, they are not instances);
* ``semantic``: one multi-label grid per question, with three kinds of question per image: all
  classes present (``all``), a random subset of them (``subset``), and a list mixing present and
  absent classes (``absent``; the absent ones get no cell and an empty mask).

Masks are decoded later by `text4seg.data.build` through pycocotools (polygons, uncompressed and
compressed RLE); here the file is only read and checked. Annotations pointing to an unknown image
or category are skipped and reported.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from text4seg.protocol.images import check_pixels

from .annotations import ImageInfo, RecordSpec, Source
from .issues import IssueLog

TASKS: tuple[str, ...] = ("refer", "instance", "semantic")
SEMANTIC_VARIANTS: tuple[str, ...] = ("all", "subset", "absent")


def read_json_text(path: Path) -> object:
    """Parse a JSON file; bytes that are not UTF-8 survive as lone surrogates (reported later).

    Raises ValueError naming the file for text that is not JSON or nests too deeply to parse."""
    try:
        return json.loads(path.read_bytes().decode("utf-8", errors="surrogateescape"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply to read") from None


def _entries(data: dict, key: str, path: Path, required: bool = False) -> list:
    """``data[key]`` as a list; missing is [] unless ``required``; any other type is a ValueError."""
    value = data.get(key)
    if value is None and not required and key not in data:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{path}: '{key}' must be a list, got {type(value).__name__}")
    return value


def _number_list(value: object, length: int) -> list[float] | None:
    """``value`` as ``length`` finite floats, or None."""
    if not isinstance(value, list) or len(value) != length:
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        return None
    return [float(v) for v in value]


def is_clean_text(text: object) -> bool:
    """True for a str that encodes to UTF-8 (no lone surrogates from undecodable bytes)."""
    if not isinstance(text, str):
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def read_instances(
    path: str | Path, log: IssueLog
) -> tuple[dict[int, ImageInfo], dict[int, dict], dict[int, str]]:
    """Images, usable annotations and category names of a COCO instances file.

    An annotation whose image or category is missing, or which has no segmentation, is reported to
    ``log`` and left out. Each kept annotation is reduced to ``image_id``, ``category_id``,
    ``segmentation``, ``iscrowd`` and ``bbox``.
    """
    path = Path(path)
    images, entries, categories = read_instances_unchecked(path, log)
    return images, _read_annotations(entries, images, categories, path, log), categories


def read_instances_unchecked(path: Path, log: IssueLog) -> tuple[dict[int, ImageInfo], list, dict[int, str]]:
    """`read_instances` with the ``annotations`` entries left as read (unchecked: `check_annotation`
    checks one); images and categories checked, problems reported to ``log``."""
    data = read_json_text(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a COCO instances file (no 'images' list)")
    images = _read_images(data["images"], path, log)
    categories = _read_categories(_entries(data, "categories", path), path, log)
    return images, _entries(data, "annotations", path), categories


def _read_images(entries: list, path: Path, log: IssueLog) -> dict[int, ImageInfo]:
    images: dict[int, ImageInfo] = {}
    for entry in entries:
        image_id = _as_int(entry.get("id")) if isinstance(entry, dict) else None
        if image_id is None:
            log.add(
                f"image{entry.get('id') if isinstance(entry, dict) else '?'}",
                "bad_image",
                "no integer id",
                path,
            )
            continue
        width, height = _as_int(entry.get("width")), _as_int(entry.get("height"))
        file_name = entry.get("file_name")
        if not width or not height or width < 1 or height < 1 or not is_clean_text(file_name):
            log.add(f"image{image_id}", "bad_image", "missing width, height or file_name", path)
            continue
        try:
            check_pixels(height, width, f"image {image_id}")
        except ValueError as err:
            log.add(f"image{image_id}", "image_too_large", str(err), path)
            continue
        images[image_id] = ImageInfo(image_id, file_name, width, height)
    return images


def _read_categories(entries: list, path: Path, log: IssueLog) -> dict[int, str]:
    categories: dict[int, str] = {}
    for entry in entries:
        cat_id = _as_int(entry.get("id")) if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if cat_id is None or not is_clean_text(name) or not name.strip():
            log.add(f"category{cat_id}", "bad_category", "no integer id or no UTF-8 name", path)
            continue
        categories[cat_id] = " ".join(name.split())
    return categories


def _read_annotations(
    entries: list, images: dict[int, ImageInfo], categories: dict[int, str], path: Path, log: IssueLog
) -> dict[int, dict]:
    annotations: dict[int, dict] = {}
    for entry in entries:
        annotation = check_annotation(entry, images, categories, path, log)
        if annotation is not None:
            annotations[annotation["id"]] = annotation
    return annotations


def check_annotation(
    entry: object, images: dict[int, ImageInfo], categories: dict[int, str], path: Path, log: IssueLog
) -> dict | None:
    """One entry of an instances file's ``annotations`` reduced to ``id``, ``image_id``,
    ``category_id``, ``segmentation``, ``iscrowd`` and ``bbox``; None (reported to ``log``) when it has
    no integer id, its image or category is missing, or it has no segmentation."""
    ann_id = _as_int(entry.get("id")) if isinstance(entry, dict) else None
    if ann_id is None:
        log.add("ann?", "bad_annotation", "annotation without an integer id", path)
        return None
    image_id, cat_id = _as_int(entry.get("image_id")), _as_int(entry.get("category_id"))
    if image_id not in images:
        log.add(f"ann{ann_id}", "missing_image", f"image_id {entry.get('image_id')!r} is not in images", path)
        return None
    if cat_id not in categories:
        log.add(
            f"ann{ann_id}",
            "missing_category",
            f"category_id {entry.get('category_id')!r} is not in categories",
            path,
        )
        return None
    if "segmentation" not in entry:
        log.add(f"ann{ann_id}", "bad_segmentation", "annotation has no segmentation", path)
        return None
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": cat_id,
        "segmentation": entry["segmentation"],
        "iscrowd": int(bool(entry.get("iscrowd", 0))),
        "bbox": _number_list(entry.get("bbox"), 4),
    }


def split_from_filename(path: str | Path) -> str:
    """``instances_val2017.json`` -> ``val2017``; ``instances.json`` -> ``train``."""
    match = re.match(r"instances_(.+)$", Path(path).stem)
    return match.group(1) if match else "train"


def _centre_x(ann: dict) -> float:
    bbox = ann.get("bbox")
    return bbox[0] + bbox[2] / 2 if bbox else float(ann["id"])


@dataclass(frozen=True)
class _Plan:
    """The records planned for one image of a COCO file."""

    dataset: str
    split: str
    categories: dict[int, str]
    tasks: tuple[str, ...]
    semantic_variants: tuple[str, ...]
    max_instances: int
    max_absent: int
    seed: int

    def spec(
        self,
        image_id: int,
        suffix: str,
        task: str,
        variant: str,
        targets: list[str],
        target_anns: list[list[int]],
    ) -> RecordSpec:
        expression = targets[0] if task == "refer" else ", ".join(targets)
        return RecordSpec(
            id=f"{self.dataset}/{self.split}/img{image_id}/{suffix}",
            task=task,
            dataset=self.dataset,
            split=self.split,
            image_id=image_id,
            expression=expression,
            targets=tuple(targets),
            target_anns=tuple(tuple(a) for a in target_anns),
            variant=variant,
        )

    def image_specs(self, image_id: int, anns: list[dict]) -> list[RecordSpec]:
        by_cat: dict[int, list[dict]] = defaultdict(list)
        for ann in sorted(anns, key=lambda a: a["id"]):
            by_cat[ann["category_id"]].append(ann)
        present = sorted(by_cat)
        names = self.categories
        specs: list[RecordSpec] = []
        if "refer" in self.tasks:
            for cat_id in present:
                specs.append(
                    self.spec(
                        image_id,
                        f"cat{cat_id}",
                        "refer",
                        "category",
                        [names[cat_id]],
                        [[a["id"] for a in by_cat[cat_id]]],
                    )
                )
        if "instance" in self.tasks:
            for cat_id in present:
                solid = sorted(
                    (a for a in by_cat[cat_id] if not a["iscrowd"]), key=lambda a: (_centre_x(a), a["id"])
                )
                if 1 <= len(solid) <= self.max_instances:
                    labels = [f"{names[cat_id]} {k + 1}" for k in range(len(solid))]
                    spec = self.spec(
                        image_id, f"inst{cat_id}", "instance", "", labels, [[a["id"]] for a in solid]
                    )
                    specs.append(replace(spec, expression=names[cat_id]))
        if "semantic" in self.tasks:
            for variant, cats in self._semantic_choices(image_id, present):
                anns_of = [[a["id"] for a in by_cat.get(c, [])] for c in cats]
                specs.append(
                    self.spec(
                        image_id, f"sem_{variant}", "semantic", variant, [names[c] for c in cats], anns_of
                    )
                )
        return specs

    def _semantic_choices(self, image_id: int, present: list[int]) -> list[tuple[str, list[int]]]:
        """(variant, category ids asked for): all present, a subset, and present + absent mixed."""
        rng = np.random.default_rng([self.seed, image_id])
        absent_pool = [c for c in sorted(self.categories) if c not in present]
        plans: list[tuple[str, list[int]]] = []
        if "all" in self.semantic_variants:
            plans.append(("all", present))
        if "subset" in self.semantic_variants and len(present) >= 2:
            size = int(rng.integers(1, len(present)))
            plans.append(("subset", sorted(int(c) for c in rng.choice(present, size, replace=False))))
        if "absent" in self.semantic_variants and absent_pool and self.max_absent > 0:
            keep = int(rng.integers(1, len(present) + 1))
            chosen = [int(c) for c in rng.choice(present, keep, replace=False)]
            extra = int(rng.integers(1, min(self.max_absent, len(absent_pool)) + 1))
            chosen += [int(c) for c in rng.choice(absent_pool, extra, replace=False)]
            plans.append(("absent", [chosen[int(k)] for k in rng.permutation(len(chosen))]))
        return plans


def load_coco(
    ann_file: str | Path,
    image_root: str | Path,
    *,
    split: str | None = None,
    tasks: Sequence[str] = TASKS,
    semantic_variants: Sequence[str] = SEMANTIC_VARIANTS,
    max_instances: int = 10,
    max_absent: int = 2,
    seed: int = 0,
    dataset: str = "coco",
    strict: bool = False,
) -> Source:
    """Read a COCO instances file and plan the records of the chosen ``tasks``.

    ``split`` defaults to the file-name suffix (``instances_val2017.json`` -> ``val2017``).
    Categories with more than ``max_instances`` instances get no ``instance`` record. Random
    choices (semantic subsets, absent classes) draw from ``rng([seed, image_id])``.
    """
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise ValueError(f"unknown COCO task(s) {sorted(unknown)}; choose from {TASKS}")
    bad_variants = set(semantic_variants) - set(SEMANTIC_VARIANTS)
    if bad_variants:
        raise ValueError(
            f"unknown semantic variant(s) {sorted(bad_variants)}; choose from {SEMANTIC_VARIANTS}"
        )
    ann_file = Path(ann_file)
    split = split or split_from_filename(ann_file)
    log = IssueLog(strict)
    images, annotations, categories = read_instances(ann_file, log)
    by_image: dict[int, list[dict]] = defaultdict(list)
    for ann in annotations.values():
        by_image[ann["image_id"]].append(ann)
    plan = _Plan(
        dataset, split, categories, tuple(tasks), tuple(semantic_variants), max_instances, max_absent, seed
    )
    specs = [spec for image_id in sorted(by_image) for spec in plan.image_specs(image_id, by_image[image_id])]
    return Source(
        dataset=dataset,
        ann_file=ann_file,
        image_root=Path(image_root),
        images=images,
        annotations=annotations,
        specs=specs,
        issues=log.items,
        input_files=[ann_file],
    )
