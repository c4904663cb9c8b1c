"""Deprecated: evaluation overlays moved to `text4seg.viz` (`overlay_panels`, `save_overlay`; one palette)."""

import warnings

from text4seg.viz import MIN_PANEL_WIDTH, PALETTE, overlay_panels, save_overlay
from text4seg.viz import overlay as tint

__all__ = ["MIN_PANEL_WIDTH", "PALETTE", "overlay_panels", "save_overlay", "tint"]

warnings.warn(
    "text4seg.eval.overlay moved to text4seg.viz (save_overlay, overlay_panels, overlay); this alias will be removed",
    DeprecationWarning,
    stacklevel=2,
)
