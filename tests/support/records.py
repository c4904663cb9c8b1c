"""Training records for the tests, made by the real builder.

`built` writes a synthetic shapes dataset in the COCO / RefCOCO / gRefCOCO file formats
(`text4seg.data.make_synthetic`) and builds its records with `text4seg.data.build`, as `text4seg build
synthetic` does: the tests that need records (train, eval) read them with the one schema
(`text4seg.protocol.records.record_features`), the template questions and answers, the descriptor grids
and the stored images of a user's build, never a hand-written imitation.

Each build is made once per session and per parameters (in a temporary folder removed at exit); the
`datasets.Dataset` it gives is shared, so a test that needs other records makes new ones from it.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import datasets

KINDS = ("refcoco", "grefcoco", "semantic")
"""What `built` can make: ``refcoco`` (one record per sentence of each single-target expression),
``grefcoco`` (also multi-target and no-target expressions) and ``semantic`` (COCO semantic records, one
per image, asking every class present)."""

_ROOT = Path(tempfile.mkdtemp(prefix="text4seg-test-records-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def _build_kind(kind: str, synth, out: Path, config) -> datasets.DatasetDict:
    from text4seg.data.build import build

    if kind == "semantic":
        anns = list(synth.instances_by_split.values())
        data = build(
            "coco", anns, synth.images, out, config, tasks=["semantic"], dataset_name="shapes"
        ).dataset
        return datasets.DatasetDict({split: _only(d, "/sem_all") for split, d in data.items()})
    anns = {"refcoco": synth.refs, "grefcoco": synth.grefs}[kind]
    return build(kind, anns, synth.images, out, config).dataset


def _only(data: datasets.Dataset, id_end: str) -> datasets.Dataset:
    return data.select([i for i, rid in enumerate(data["id"]) if rid.endswith(id_end)])


def built(
    kind: str = "refcoco",
    *,
    images: int = 3,
    size: int = 32,
    grid: int = 8,
    seed: int = 0,
    split: str = "train",
    target_label: str | None = None,
    image_store: str = "embed",
) -> datasets.Dataset:
    """The records of `kind` (one of `KINDS`) that `text4seg build` makes from `images` synthetic images of
    `size`×`size` pixels drawn with `seed` (`text4seg.data.iter_samples`: every other image has a distractor,
    every fifth a crowd), all in split `split`, with a `grid`×`grid` descriptor and `target_label`
    (`BuildConfig`). Images are embedded by default (`image_store`), so records hold PIL images and a test
    can save them anywhere; ``"folder"`` gives what a default build stores (paths into the build folder)."""
    if kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected one of {KINDS}")
    return _built(kind, images, size, grid, seed, split, target_label, image_store)


@functools.cache
def _built(*params) -> datasets.Dataset:
    """`built` once per parameter tuple (one folder per tuple, so no build is ever rewritten under a user)."""
    from text4seg.data import make_synthetic
    from text4seg.data.build import BuildConfig

    kind, images, size, grid, seed, split, target_label, image_store = params
    folder = _ROOT / "-".join(map(str, params))
    synth = make_synthetic(folder / "source", num_images=images, image_size=size, seed=seed, splits=[split])
    config = BuildConfig(
        grid=grid, seed=seed, target_label=target_label, image_store=image_store, progress=False
    )
    return _build_kind(kind, synth, folder / "built", config)[split]


def record_list(n: int, kind: str = "refcoco", **params) -> list[dict]:
    """The first `n` records of `built(kind, **params)` as dicts (images decoded to PIL), a new list each call;
    `ValueError` when the build has fewer."""
    data = built(kind, **params)
    if len(data) < n:
        raise ValueError(f"built({kind!r}, {params}) has {len(data)} records, {n} wanted: draw more images")
    return [data[i] for i in range(n)]


@functools.cache
def evaluation_split(
    images: int = 3, *, size: int = 48, grid: int = 16, seed: int = 0, semantic: bool = True
) -> datasets.Dataset:
    """A ``val`` split as evaluation reads it: the ``grefcoco`` records (single-, multi- and no-target
    expressions) of `images` synthetic images, then, with `semantic`, their ``semantic`` records."""
    kinds = ("grefcoco", "semantic") if semantic else ("grefcoco",)
    parts = [built(k, images=images, size=size, grid=grid, seed=seed, split="val") for k in kinds]
    return datasets.concatenate_datasets(parts)
