"""The demo's data: synthetic shapes drawn in the RefCOCO layout, built into records, rewritten to the
answer form the demo trains on, put in training order, and SAVED: OUT/data/records is a `datasets`
folder (train in the exact order training reads it, val, test) with its own text4seg.json, so the
trainer, `text4seg predict`, notebook 03 and the probes all read what was trained.

The answer form (`demo.answer`): `prefix` opens with the expression's colour and kind
(``red circle\\n<seg>…</seg>``, always four tokens), so the descriptor keeps a fixed offset and the model
first reads the expression back; `block` is the ``<seg>`` block alone; `sentence` keeps the builder's
template sentence. The training order: `curriculum` samples from single-shape images, then `color_stage`
samples from several-shape images where the target's colour alone picks it out, then every record.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from text4seg.protocol.asking import Asking
from text4seg.train.config import TrainConfig

from .settings import ANSWER_SENTENCES, DemoSettings

DATA_DIR = "data"
RECORDS_DIR = "records"
GRID = 16


def records_dir(out_dir: str | Path) -> Path:
    """Where a demo run saved its records: OUT/data/records."""
    return Path(out_dir) / DATA_DIR / RECORDS_DIR


def prepare(out_dir: str | Path, config: TrainConfig, demo: DemoSettings, progress: bool = True) -> Path:
    """Draw, build, rewrite, order and save the demo's records; returns OUT/data/records."""
    import datasets

    from text4seg.data.build import BuildConfig, build
    from text4seg.data.synthetic import make_synthetic

    root = Path(out_dir) / DATA_DIR
    seed, image_size = config.loop.seed, int(config.model.tiny.get("image_size", 128))
    paths = make_synthetic(root / "source", num_images=demo.num_images, image_size=image_size, seed=seed)
    built = root / "built"
    config_ = BuildConfig(  # embedded: the rewritten records are saved elsewhere and `built` is removed
        grid=GRID, seed=seed, progress=progress, target_label=demo.target_label, image_store="embed"
    )
    data = build("refcoco", paths.refs, paths.images, built, config_).dataset
    counts = _shapes_per_image(paths.instances)
    data = data.map(lambda r: {"num_shapes": counts.get(int(r["source"]["image_id"]), 0)})
    for split in list(data):
        data[split] = data[split].add_column("color_unique", color_unique(data[split]))
    data = answers_in_form(data, demo.answer)
    data["train"] = training_order(data["train"], demo, seed)
    out = records_dir(out_dir)
    shutil.rmtree(out, ignore_errors=True)
    datasets.DatasetDict(dict(data)).save_to_disk(str(out))
    asking_of(demo).save(out)
    del data
    shutil.rmtree(built, ignore_errors=True)  # the records hold their images; one copy is enough
    return out


def asking_of(demo: DemoSettings) -> Asking:
    """How a model trained on the demo's records must be asked (saved as the records' text4seg.json)."""
    return Asking(
        grid=(GRID, GRID), target_label=demo.target_label, answer_sentences=ANSWER_SENTENCES[demo.answer]
    )


def load_records(out_dir: str | Path, split: str = "test") -> Any:
    """A split of the records a demo run saved (answers exactly as trained)."""
    import datasets

    folder = records_dir(out_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no saved records (is {out_dir} a `text4seg demo --out` folder?)")
    return datasets.load_from_disk(str(folder))[split]


# ------------------------------------------------------------------------------------------- answers
def answers_in_form(records: Any, answer: str) -> Any:
    """`records` with their answers in the form `answer` (`prefix`, `block` or `sentence`)."""
    if answer == "prefix":
        return records.map(prefix_answer, desc="answers opening with colour and kind")
    if answer == "block":
        return records.map(drop_sentence, desc="answers without sentence")
    return records


def drop_sentence(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its answer reduced to the ``<seg>…</seg>`` block (a fixed-offset descriptor)."""
    from text4seg.codec import TEXT4SEG

    messages = record["messages"]
    answer = messages[-1]["content"][0]["text"]
    start = answer.find(TEXT4SEG.open_tag)
    if start < 0:
        raise ValueError(f"record {record['id']}: the answer has no {TEXT4SEG.open_tag} block")
    last = dict(messages[-1], content=[{"type": "text", "text": answer[start:]}])
    return {"messages": [*messages[:-1], last]}


def color_and_kind(expression: str) -> tuple[str | None, str | None]:
    """The first colour word and the first kind word of a synthetic expression (None where it has none)."""
    from text4seg.data.synthetic import COLORS, KINDS

    words = expression.split()
    return next((w for w in words if w in COLORS), None), next((w for w in words if w in KINDS), None)


def prefix_answer(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its answer reduced to the expression's colour and kind, then the ``<seg>`` block."""
    color, kind = color_and_kind(record["expression"])
    if color is None or kind is None:
        raise ValueError(
            f"record {record['id']}: expression {record['expression']!r} names no colour and kind"
        )
    messages = drop_sentence(record)["messages"]
    block = messages[-1]["content"][0]["text"]
    last = dict(messages[-1], content=[{"type": "text", "text": f"{color} {kind}\n{block}"}])
    return {"messages": [*messages[:-1], last]}


# --------------------------------------------------------------------------------------------- order
def _shapes_per_image(instances: Path) -> dict[int, int]:
    """Annotations (shapes, crowd clusters included) per image id of a COCO instances file."""
    counts: dict[int, int] = {}
    for ann in json.loads(Path(instances).read_text(encoding="utf-8"))["annotations"]:
        counts[int(ann["image_id"])] = counts.get(int(ann["image_id"]), 0) + 1
    return counts


def color_unique(records: Any) -> list[bool]:
    """Per record: whether the target is the only described shape of its image with the colour its
    expression names (read from the expressions of the image's other records)."""
    colors: dict[int, dict[tuple[int, ...], str | None]] = {}
    for source, expression in zip(records["source"], records["expression"], strict=True):
        colors.setdefault(int(source["image_id"]), {})[tuple(source["ann_ids"])] = color_and_kind(expression)[
            0
        ]
    out = []
    for source, expression in zip(records["source"], records["expression"], strict=True):
        own, target = color_and_kind(expression)[0], tuple(source["ann_ids"])
        others = (c for ann, c in colors[int(source["image_id"])].items() if ann != target)
        out.append(own is not None and all(c != own for c in others))
    return out


def _stage_draw(rng: np.random.Generator, pool: list[int], size: int) -> list[int]:
    if not pool or size <= 0:
        return []
    return [int(i) for i in rng.choice(pool, size=size, replace=len(pool) < size)]


def training_order(records: Any, demo: DemoSettings, seed: int) -> Any:
    """The training records in the order they are seen: `demo.curriculum` samples from single-shape
    images, then `demo.color_stage` samples from several-shape images where the target's colour alone
    picks it out (each stage shuffled), then every record (shuffled, or grouped by image with
    `demo.group_by_image`); a negative curriculum keeps single-shape images only."""
    rng = np.random.default_rng(seed)
    shapes = records["num_shapes"]
    single = [i for i, n in enumerate(shapes) if n == 1]
    if demo.curriculum < 0:
        return records.select(rng.permutation(single).tolist())
    head = _stage_draw(rng, single, demo.curriculum)
    if demo.color_stage > 0:
        unique = records["color_unique"]
        pool = [i for i, n in enumerate(shapes) if n > 1 and unique[i]]
        head += _stage_draw(rng, pool, demo.color_stage)
    tail = _grouped_by_image(records, rng) if demo.group_by_image else rng.permutation(len(records)).tolist()
    return records.select(head + tail)


def _grouped_by_image(records: Any, rng: np.random.Generator) -> list[int]:
    """Every record once: images in random order, each image's records (its expressions) together."""
    groups: dict[int, list[int]] = {}
    for index, source in enumerate(records["source"]):
        groups.setdefault(int(source["image_id"]), []).append(index)
    images = list(groups.values())
    return [int(i) for g in rng.permutation(len(images)) for i in rng.permutation(images[g])]
