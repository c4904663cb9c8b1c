"""The image the model sees is the image the descriptor describes: an audit of every recipe model's
preprocessing, and the default that makes the whole image visible."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import transformers as tf
from PIL import Image

from text4seg.models.loading import load_processor
from text4seg.models.preprocess import hidden_share, image_processor_of, make_visible, visible_mode
from text4seg.models.tiny import build_tiny

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
HALF = [0.5, 0.5, 0.5]


@dataclass(frozen=True)
class Stock:
    """The published preprocessing of a recipe's model (its preprocessor_config.json settings, as facts)."""

    model: str
    cls: str
    settings: dict[str, Any]
    hides_4_3: float  # share of a 4:3 photo's area the stock preprocessing hides
    recipes: tuple[str, ...] = field(default=())


# One entry per preprocessing a recipe's model may run (stock, and the variant the recipe selects).
STOCK: dict[str, Stock] = {
    # shortest edge -> 336, then a 336×336 center crop: a 4:3 photo loses 1 - 336/448 of its width.
    "llava-1.5": Stock(
        "llava-hf/llava-1.5-7b-hf",
        "CLIPImageProcessor",
        dict(
            size={"shortest_edge": 336},
            crop_size={"height": 336, "width": 336},
            do_center_crop=True,
            resample=3,
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
        ),
        0.25,
        ("llava_1_5_7b",),
    ),
    # square resize (squash) to 448×448, no crop.
    "paligemma2-448": Stock(
        "google/paligemma2-3b-pt-448",
        "SiglipImageProcessor",
        dict(size={"height": 448, "width": 448}, resample=3, image_mean=HALF, image_std=HALF),
        0.0,
        ("paligemma2_3b",),
    ),
    # dynamic resolution: min_pixels 3136, max_pixels 12845056, patch 14, merge 2; resize, never crop.
    "qwen2.5-vl": Stock(
        "Qwen/Qwen2.5-VL-3B-Instruct (and -7B-)",
        "Qwen2VLImageProcessor",
        dict(
            size={"shortest_edge": 3136, "longest_edge": 12845056},
            patch_size=14,
            merge_size=2,
            temporal_patch_size=2,
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
        ),
        0.0,
        ("qwen2_5_vl_3b", "qwen2_5_vl_3b_mix", "qwen2_5_vl_7b"),
    ),
    "qwen2.5-vl recipe": Stock(
        "Qwen/Qwen2.5-VL-3B-Instruct, min_pixels = max_pixels = 200704",
        "Qwen2VLImageProcessor",
        dict(
            size={"shortest_edge": 200704, "longest_edge": 200704},
            patch_size=14,
            merge_size=2,
            temporal_patch_size=2,
            image_mean=CLIP_MEAN,
            image_std=CLIP_STD,
        ),
        0.0,
    ),
    # dynamic resolution: 65536..16777216 pixels, patch 16, merge 2.
    "qwen3-vl": Stock(
        "Qwen/Qwen3-VL-4B-Instruct",
        "Qwen2VLImageProcessor",
        dict(
            size={"shortest_edge": 65536, "longest_edge": 16777216},
            patch_size=16,
            merge_size=2,
            temporal_patch_size=2,
            image_mean=HALF,
            image_std=HALF,
        ),
        0.0,
        ("qwen3_vl_4b",),
    ),
    # longest edge -> 1536, split into 384 px tiles plus a global 384 px image (resized, never cropped).
    "smolvlm2": Stock(
        "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
        "SmolVLMImageProcessor",
        dict(
            size={"longest_edge": 1536},
            max_image_size={"longest_edge": 384},
            do_image_splitting=True,
            resample=1,
            image_mean=HALF,
            image_std=HALF,
        ),
        0.0,
        ("smolvlm2_2b",),
    ),
    "smolvlm2 recipe": Stock(
        "HuggingFaceTB/SmolVLM2-2.2B-Instruct, no splitting",
        "SmolVLMImageProcessor",
        dict(
            size={"longest_edge": 384},
            max_image_size={"longest_edge": 384},
            do_image_splitting=False,
            image_mean=HALF,
            image_std=HALF,
        ),
        0.0,
    ),
    # square resize to 896×896; pan-and-scan (off by default) adds crops beside the whole image.
    "gemma3": Stock(
        "google/gemma-3-4b-it",
        "Gemma3ImageProcessor",
        dict(size={"height": 896, "width": 896}, resample=2, image_mean=HALF, image_std=HALF),
        0.0,
        ("gemma3_4b",),
    ),
    "gemma3 pan-and-scan": Stock(
        "google/gemma-3-4b-it, do_pan_and_scan",
        "Gemma3ImageProcessor",
        dict(
            size={"height": 896, "width": 896},
            do_pan_and_scan=True,
            pan_and_scan_min_crop_size=256,
            pan_and_scan_max_num_crops=4,
            pan_and_scan_min_ratio_to_activate=1.2,
            image_mean=HALF,
            image_std=HALF,
        ),
        0.0,
    ),
    # The published image processor config says crop_to_patches false, but InternVLProcessor passes
    # crop_to_patches=True at each call (its images_kwargs), so the stock processor cuts 448×448 tiles
    # (1..12, nearest aspect ratio, plus a thumbnail); the recipe's `processor: {crop_to_patches: false}`
    # gives one squashed 448×448 image (test_internvl_processor_tiles_unless_told_not_to).
    "internvl3": Stock(
        "OpenGVLab/InternVL3-2B-hf",
        "GotOcr2ImageProcessor",
        dict(size={"height": 448, "width": 448}, crop_to_patches=True, min_patches=1, max_patches=12),
        0.0,
    ),
    "internvl3 recipe": Stock(
        "OpenGVLab/InternVL3-2B-hf, crop_to_patches=False (the recipe)",
        "GotOcr2ImageProcessor",
        dict(size={"height": 448, "width": 448}, crop_to_patches=False, min_patches=1, max_patches=12),
        0.0,
        ("internvl3_2b",),
    ),
}


def _stock(name: str) -> Any:
    entry = STOCK[name]
    return getattr(tf, entry.cls)(**entry.settings)


def _striped(width: int, height: int, stripe: float = 0.05) -> Image.Image:
    """Grey, with the leftmost `stripe` of the width black and the rightmost white."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    edge = max(1, round(width * stripe))
    pixels[:, :edge] = 0
    pixels[:, -edge:] = 255
    return Image.fromarray(pixels)


def edges_seen(image_processor: Any, width: int, height: int) -> tuple[bool, bool]:
    """Whether the black left edge and the white right edge of a striped image reach `pixel_values`."""
    out = image_processor(images=[_striped(width, height)], return_tensors="pt")
    pixels = out["pixel_values"].float()
    mean = np.asarray(getattr(image_processor, "image_mean", HALF), dtype=float)
    std = np.asarray(getattr(image_processor, "image_std", HALF), dtype=float)
    white, black = ((1.0 - mean) / std).min(), ((0.0 - mean) / std).max()
    tol = 0.05
    return bool(pixels.min() <= black + tol), bool(pixels.max() >= white - tol)


def test_every_recipe_model_is_audited():
    audited = {r for entry in STOCK.values() for r in entry.recipes}
    recipes = {p.stem for p in RECIPES.glob("*.yaml")} - {"tiny_cpu"}
    assert recipes <= audited, f"recipes without a preprocessing audit: {sorted(recipes - audited)}"


@pytest.mark.parametrize("name", list(STOCK))
def test_stock_geometry_matches_what_reaches_the_model(name):
    ip = _stock(name)
    assert hidden_share(ip, 640, 480).area == pytest.approx(STOCK[name].hides_4_3)
    # A 2:1 image whose edge stripes are 5% of its width: the stripes survive iff the crop spares them.
    hides_stripes = hidden_share(ip, 400, 200).width > 0.1
    assert edges_seen(ip, 400, 200) == (not hides_stripes, not hides_stripes)


@pytest.mark.parametrize("name", list(STOCK))
@pytest.mark.parametrize("visible", ["squash", "pad", None])
def test_default_shows_both_edges(name, visible):
    ip = _stock(name)
    if visible == "pad" and hidden_share(ip, 400, 200):
        assert hasattr(make_visible(_stock(name), "pad"), "pad_to_square")
    shown = make_visible(ip, visible)
    assert not hidden_share(shown, 400, 200)
    assert not hidden_share(shown, 200, 400)
    assert edges_seen(shown, 400, 200) == (True, True)
    assert visible_mode(shown) == (visible or "squash")


def test_llava_stock_hides_a_quarter_of_a_4_3_photo_and_squash_fills_336():
    ip = _stock("llava-1.5")
    hidden = hidden_share(ip, 640, 480)
    assert (hidden.width, hidden.height) == (pytest.approx(0.25), 0.0)
    assert "center crop hides 25% of a 640×480 image's width (12.5% on each side)" == hidden.describe(
        640, 480
    )
    assert hidden_share(ip, 480, 640).height == pytest.approx(0.25)
    squashed = make_visible(ip)
    out = squashed(images=[_striped(640, 480)], return_tensors="pt")["pixel_values"]
    assert tuple(out.shape[-2:]) == (336, 336)
    padded = make_visible(_stock("llava-1.5"), "pad")
    assert tuple(padded(images=[_striped(640, 480)], return_tensors="pt")["pixel_values"].shape[-2:]) == (
        336,
        336,
    )


def test_crop_is_kept_with_a_warning_naming_the_loss():
    with pytest.warns(UserWarning, match=r"center crop hides 25% of a 640×480 image's width"):
        kept = make_visible(_stock("llava-1.5"), "crop")
    assert kept.do_center_crop and visible_mode(kept) == "crop"
    assert edges_seen(kept, 400, 200) == (False, False)


def test_pad_refused_where_the_processor_cannot_pad():
    ip = tf.BitImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    with pytest.raises(ValueError, match="visible='pad' is not available for BitImageProcessor"):
        make_visible(ip, "pad")
    with pytest.raises(ValueError, match="unknown visible='whole'"):
        make_visible(ip, "whole")


def test_tiny_llava_shows_the_whole_image_by_default_and_can_crop():
    _, processor = build_tiny("llava")
    assert not hidden_share(processor, 64, 32)
    assert edges_seen(processor.image_processor, 64, 32) == (True, True)
    with pytest.warns(UserWarning, match="center crop hides"):
        _, cropping = build_tiny("llava", visible="crop")
    assert edges_seen(cropping.image_processor, 64, 32) == (False, False)


@pytest.mark.parametrize("visible", ["squash", "pad", "crop"])
def test_saved_processor_reloads_with_the_same_view(tmp_path, visible):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, processor = build_tiny("llava", visible=visible)
    processor.save_pretrained(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reloaded = load_processor(tmp_path)
    assert visible_mode(reloaded) == visible
    assert type(image_processor_of(reloaded)) is type(image_processor_of(processor))
    assert image_processor_of(reloaded).to_dict() == image_processor_of(processor).to_dict()
    assert any("center crop hides" in str(w.message) for w in caught) == (visible == "crop")
    image = _striped(64, 32)
    expected = processor(images=[image], text="<image>", return_tensors="pt")["pixel_values"]
    got = reloaded(images=[image], text="<image>", return_tensors="pt")["pixel_values"]
    assert got.equal(expected)


def test_load_processor_takes_visible_from_recipe_settings(tmp_path):
    with pytest.warns(UserWarning):
        _, processor = build_tiny("llava", visible="crop")
    processor.save_pretrained(tmp_path)
    assert visible_mode(load_processor(tmp_path, visible="squash")) == "squash"
    assert visible_mode(load_processor(tmp_path, **{"visible": "pad"})) == "pad"


def test_internvl_processor_tiles_unless_told_not_to(tmp_path):
    import yaml

    from text4seg.models import registry
    from text4seg.models.tiny import tiny_config_and_processor

    _, processor = tiny_config_and_processor("internvl", image_size=32)
    processor.image_processor.max_patches = 12  # the published value (the tiny model keeps one tile)
    processor.save_pretrained(tmp_path)
    assert image_processor_of(load_processor(tmp_path)).crop_to_patches is False  # as saved, yet:
    prompt, image = registry.render_prompt(processor, "hi"), _striped(128, 64)

    def tiles(**kwargs: Any) -> int:
        loaded = load_processor(tmp_path, **kwargs)
        return loaded(text=[prompt], images=[image], return_tensors="pt")["pixel_values"].shape[0]

    recipe = yaml.safe_load((RECIPES / "internvl3_2b.yaml").read_text())["model"]["processor"]
    assert tiles() > 1  # the processor's own call-time default wins over the saved setting
    assert tiles(**recipe) == 1
