"""The light learned refiner at inference (text4seg.infer.light) and `--refine light:PATH`."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from text4seg.cli import main
from text4seg.codec import grid_to_mask, mask_to_grid
from text4seg.infer.light import LightRefiner
from text4seg.infer.model_args import ArgsError, add_refine_args, light_model, refiner_from_args, sam_model
from text4seg.models.light_refiner import LightRefinerConfig, LightRefinerNet, save_light_refiner

SMALL = LightRefinerConfig(widths=(4, 8, 16), side=32)


@pytest.fixture()
def scene() -> tuple[np.ndarray, np.ndarray]:
    """A 40×56 noisy image with a bright square and a dark bar, and its 8×8 label grid (1 square, 2 bar)."""
    image = np.random.default_rng(0).integers(90, 140, (40, 56, 3)).astype(np.uint8)
    labels = np.zeros((40, 56), np.int64)
    labels[8:28, 6:30], labels[5:35, 40:48] = 1, 2
    image[labels == 1], image[labels == 2] = 250, 10
    grid = np.where(mask_to_grid(labels == 1, 8), 1, 0) + np.where(mask_to_grid(labels == 2, 8), 2, 0)
    return image, grid


@pytest.fixture()
def saved(tmp_path):
    return save_light_refiner(LightRefinerNet(SMALL), tmp_path / "refiner")


def test_binary_grid_gives_a_bool_mask_equal_to_guided_when_untrained(scene, saved):
    image, grid = scene
    binary = (grid == 1).astype(np.int64)
    result = LightRefiner.load(saved).refine(Image.fromarray(image), binary)
    assert result.mask.dtype == bool and result.mask.shape == image.shape[:2]
    assert np.array_equal(result.mask, grid_to_mask(binary, (40, 56), "guided", label=1, image=image))
    assert np.array_equal(result.coarse, grid_to_mask(binary, (40, 56), "bilinear", label=1))
    assert not result.kept_coarse and result.as_dict()["seconds"]["refine"] >= 0


def test_label_grid_gives_a_label_map(scene, saved):
    image, grid = scene
    result = LightRefiner.load(saved).refine(image, grid)
    assert result.mask.dtype == np.int32 and set(np.unique(result.mask)) == {0, 1, 2}


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_refine_args(parser)
    return parser.parse_args(list(argv))


def test_refine_light_path_builds_the_light_refiner(saved):
    args = _args("--refine", f"light:{saved}")
    assert light_model(args) == str(saved) and sam_model(args) is None
    assert isinstance(refiner_from_args(args, "cpu"), LightRefiner)
    assert light_model(_args("--refine", "sam")) is None


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (("--refine", "light:"), "needs the folder"),
        (("--refine", "light:/no/such/folder"), "holds no light_refiner.json"),
    ],
)
def test_bad_light_choices_are_refused(argv, match):
    with pytest.raises(ArgsError, match=match):
        light_model(_args(*argv))


def test_light_with_sam_is_refused(saved):
    with pytest.raises(ArgsError, match="two refiners"):
        light_model(_args("--refine", f"light:{saved}", "--sam", "tiny"))


def test_predict_refines_with_light(tiny_vlm, saved, tmp_path, capsys):
    model, processor = tiny_vlm
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (36, 52, 3)).astype(np.uint8)).save(photo)
    out = tmp_path / "mask.png"
    argv = ["predict", str(tmp_path / "model"), str(photo), "cat", "--grid", "4", "--device", "cpu"]
    assert main([*argv, "--out", str(out), "--refine", f"light:{saved}"]) == 0
    assert np.asarray(Image.open(out)).shape == (36, 52)
    assert main([*argv, "--out", str(out), "--refine", "light:nowhere"]) == 2
    assert "holds no light_refiner.json" in capsys.readouterr().err
