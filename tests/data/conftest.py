"""Shared fixtures: one synthetic dataset written to disk, and records built from its files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from text4seg.data.build import BuildConfig, build
from text4seg.data.synthetic import SyntheticPaths, make_synthetic

NUM_IMAGES = 30  # keep in step with test_data_synthetic.py
IMAGE_SIZE = (160, 120)


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> SyntheticPaths:
    """A synthetic dataset (non-square images, three splits) written once per test session."""
    return make_synthetic(
        tmp_path_factory.mktemp("synth"), num_images=NUM_IMAGES, image_size=IMAGE_SIZE, seed=7
    )


def _build(kind: str, synth: SyntheticPaths, out: Path, **kwargs):
    ann = {"coco": list(synth.instances_by_split.values()), "refcoco": synth.refs, "grefcoco": synth.grefs}[
        kind
    ]
    config = kwargs.pop("config", BuildConfig(progress=False))
    return build(kind, ann, synth.images, out, config, **kwargs)


@pytest.fixture(scope="session")
def built(synth: SyntheticPaths, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Records of all three kinds, built once from the synthetic files."""
    root = tmp_path_factory.mktemp("built")
    return {kind: _build(kind, synth, root / kind) for kind in ("coco", "refcoco", "grefcoco")}


@pytest.fixture
def corrupt_copy(synth: SyntheticPaths, tmp_path: Path):
    """A writable copy of the synthetic dataset, to damage in one test."""

    def make() -> SyntheticPaths:
        root = tmp_path / "copy"
        shutil.copytree(synth.root, root)
        return SyntheticPaths(
            root=root,
            images=root / "images",
            instances=root / "instances.json",
            instances_by_split={k: root / v.name for k, v in synth.instances_by_split.items()},
            refs=root / synth.refs.name,
            grefs=root / synth.grefs.name,
            num_images=synth.num_images,
            num_annotations=synth.num_annotations,
            num_refs=synth.num_refs,
            num_grefs=synth.num_grefs,
        )

    return make


@pytest.fixture(scope="session")
def build_kind():
    """``build_kind(kind, synth, out, **kwargs)``: build records of one kind from synthetic files."""
    return _build
