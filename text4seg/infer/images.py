"""Deprecated: moved to `text4seg.protocol.images` (the contract shared by data, training and inference)."""

import sys
import warnings

from text4seg.protocol import images as _moved

warnings.warn(
    "text4seg.infer.images moved to text4seg.protocol.images; this alias will be removed",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
