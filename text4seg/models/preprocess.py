"""What part of an image the model sees: find preprocessing that hides pixels, and make the whole image visible.

A semantic descriptor covers the whole image, so the pixels the model gets must cover it too. Some stock
image processors hide part of it: llava-hf's LLaVA-1.5 resizes the shortest edge to 336 and then center-crops
336×336, which cuts the left and right eighth of a 4:3 photo. `HIDING_STEPS` is the table of such steps,
each a probe computing, from the processor's settings alone (pure geometry), the share of a W×H image it
hides; `hidden_share` runs them all.

`make_visible(processor, visible)` is applied when a processor is loaded (`models.loading.load_processor`,
`models.tiny`) so training, inference and evaluation see the same pixels:

- `"squash"` (the default, what Text4Seg did): resize to the crop's size, a square, without cropping;
- `"pad"`: pad to a square with the mean colour first (LLaVA's own `expand2square`), then resize;
- `"crop"`: keep the stock preprocessing, with a warning naming what is lost.

Why squash is the default (bench/results/visible.md, tiny LLaVA trained 150 steps per mode on 4:3 synthetic
referring records): the learned scores did not tell the modes apart (all-background answers, gIoU 0 for all
three), so geometry decides. Crop kept 89% of a target's pixels in view and left 9.5% of targets mostly
unseen; squash and pad show every pixel, but pad spends a quarter of a 4:3 image's tokens on padding and
maps the descriptor onto a band of the input, while squash uses every token and lines the square patch
grid up with the square descriptor grid.

The choice is stored on the image processor (`text4seg_visible` in preprocessor_config.json), so a processor
saved beside a model reloads the same way. Processors that hide nothing (Qwen-VL's dynamic resolution,
SigLIP/Gemma 3/InternVL square resizes, Idefics3 tiles) are left as they are.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VISIBLE_MODES = ("squash", "pad", "crop")
DEFAULT_VISIBLE = "squash"
MARKER = "text4seg_visible"
REFERENCE = (640, 480)  # the 4:3 photo the warning speaks of
_EPS = 1e-6


@dataclass(frozen=True)
class Hidden:
    """Shares of an image's width and height that preprocessing hides (both sides together), and by what."""

    steps: tuple[str, ...] = ()
    width: float = 0.0
    height: float = 0.0

    @property
    def area(self) -> float:
        """Share of the image's area the model never sees."""
        return 1.0 - (1.0 - self.width) * (1.0 - self.height)

    def __bool__(self) -> bool:
        return self.area > _EPS

    def describe(self, width: int, height: int) -> str:
        """E.g. "center crop hides 25% of a 640×480 image's width (12.5% on each side)"."""
        if not self:
            return f"nothing of a {width}×{height} image is hidden"
        parts = [
            f"{share:.3g}% of a {width}×{height} image's {side} ({share / 2:.3g}% on each side)"
            for side, share in (("width", 100 * self.width), ("height", 100 * self.height))
            if share > 100 * _EPS
        ]
        return f"{' and '.join(self.steps)} hides {' and '.join(parts)}"


def image_processor_of(processor: Any) -> Any:
    """The image processor inside a processor (or the image processor itself)."""
    return getattr(processor, "image_processor", processor)


def _field(size: Any, key: str) -> Any:
    """One entry of a `size`/`crop_size` setting (a dict or transformers' SizeDict)."""
    if size is None:
        return None
    return size.get(key) if isinstance(size, dict) else getattr(size, key, None)


def _pads_to_square(ip: Any) -> bool:
    return bool(getattr(ip, "do_pad", False)) and hasattr(ip, "pad_to_square")


def _resized(ip: Any, width: float, height: float) -> tuple[float, float]:
    """Size after the pad-to-square and resize steps of a CLIP-style processor."""
    if _pads_to_square(ip):
        width = height = max(width, height)
    if not getattr(ip, "do_resize", True):
        return width, height
    size = getattr(ip, "size", None)
    if _field(size, "height") and _field(size, "width"):
        return float(_field(size, "width")), float(_field(size, "height"))
    scale = 1.0
    if _field(size, "shortest_edge"):
        scale = _field(size, "shortest_edge") / min(width, height)
    longest = _field(size, "longest_edge")
    if longest and max(width, height) * scale > longest:
        scale = longest / max(width, height)
    return width * scale, height * scale


def _center_crop(ip: Any, width: int, height: int) -> Hidden:
    """A center crop smaller than the resized image hides its margins."""
    if not getattr(ip, "do_center_crop", False):
        return Hidden()
    crop = getattr(ip, "crop_size", None) or getattr(ip, "size", None)
    cw, ch = _field(crop, "width"), _field(crop, "height")
    if not (cw and ch):
        return Hidden()
    rw, rh = _resized(ip, width, height)
    return Hidden(("center crop",), max(0.0, 1.0 - cw / rw), max(0.0, 1.0 - ch / rh))


# Preprocessing steps that can hide pixels: name -> probe (image processor, W, H) -> Hidden.
HIDING_STEPS: dict[str, Callable[[Any, int, int], Hidden]] = {"center crop": _center_crop}


def hidden_share(processor: Any, width: int, height: int) -> Hidden:
    """The shares of a `width`×`height` image the processor's preprocessing hides (from its settings)."""
    ip = image_processor_of(processor)
    found = [h for h in (probe(ip, width, height) for probe in HIDING_STEPS.values()) if h]
    return Hidden(
        steps=tuple(s for h in found for s in h.steps),
        width=1.0 - _product(1.0 - h.width for h in found),
        height=1.0 - _product(1.0 - h.height for h in found),
    )


def _product(values: Any) -> float:
    out = 1.0
    for v in values:
        out *= v
    return out


def _rebuilt(ip: Any, cls: Any = None, **changes: Any) -> Any:
    """A new image processor of `cls` (default: the same class) with `ip`'s settings and `changes`."""
    settings = {k: v for k, v in ip.to_dict().items() if k not in ("image_processor_type", "processor_class")}
    settings.pop(MARKER, None)
    return (cls or type(ip))(**{**settings, **changes})


def _squash(ip: Any) -> Any:
    """Resize to the crop's size (a square for every crop we know), no crop."""
    crop = getattr(ip, "crop_size", None) or getattr(ip, "size", None)
    return _rebuilt(
        ip, size={"height": _field(crop, "height"), "width": _field(crop, "width")}, do_center_crop=False
    )


def _pad(ip: Any) -> Any:
    """Pad to a square with the mean colour before resizing (LLaVA's processor knows how; CLIP's does not,
    so a CLIP processor becomes a LlavaImageProcessor with the same settings)."""
    if hasattr(ip, "pad_to_square"):
        return _rebuilt(ip, do_pad=True)
    import transformers

    if isinstance(ip, transformers.CLIPImageProcessor):
        return _rebuilt(ip, transformers.LlavaImageProcessor, do_pad=True)
    raise ValueError(
        f"visible='pad' is not available for {type(ip).__name__} (it cannot pad to a square); "
        "use visible='squash'"
    )


_REMEDIES: dict[str, Callable[[Any], Any]] = {"squash": _squash, "pad": _pad}


def visible_mode(processor: Any) -> str | None:
    """The visibility choice stored on a processor (None when text4seg never set one)."""
    return getattr(image_processor_of(processor), MARKER, None)


def make_visible(processor: Any, visible: str | None = None) -> Any:
    """Make the processor show the model the whole image (see the module doc); returns the processor.

    `visible` is "squash", "pad" or "crop"; None keeps the choice stored on the processor, else "squash".
    The processor (or the image processor, when given alone) is changed in place where possible; use
    the return value.
    """
    ip = image_processor_of(processor)
    if ip is None:
        return processor
    mode = visible or visible_mode(processor) or DEFAULT_VISIBLE
    if mode not in VISIBLE_MODES:
        raise ValueError(f"unknown visible={mode!r}; choose one of {', '.join(VISIBLE_MODES)}")
    hidden = hidden_share(ip, *REFERENCE)
    if hidden and mode == "crop":
        warnings.warn(
            f"visible='crop': {hidden.describe(*REFERENCE)}, yet every descriptor row covers the full "
            "image; the model is taught labels of pixels it never sees",
            UserWarning,
            stacklevel=2,
        )
    elif hidden:
        ip = _REMEDIES[mode](ip)
    setattr(ip, MARKER, mode)
    if not hasattr(processor, "image_processor"):
        return ip
    processor.image_processor = ip
    return processor
