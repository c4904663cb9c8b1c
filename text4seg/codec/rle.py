"""Deprecated name of `text4seg.codec.rrle` (the row-wise run-length text codec, R-RLE).

"rle" also names COCO's mask run-length encoding (`text4seg.data.masks`), so the text codec moved to
`rrle`. This module re-exports it for old imports and warns; import from `text4seg.codec` instead.
"""

from __future__ import annotations

import warnings

from .rrle import *  # noqa: F403
from .rrle import __all__, check_labels  # noqa: F401

warnings.warn(
    "text4seg.codec.rle is deprecated: import from text4seg.codec (the module is now text4seg.codec.rrle)",
    DeprecationWarning,
    stacklevel=2,
)
