"""Deprecated: moved to `text4seg.protocol.templates` (the contract shared by data, training and inference)."""

import sys
import warnings

from text4seg.protocol import templates as _moved

warnings.warn(
    "text4seg.data.templates moved to text4seg.protocol.templates; this alias will be removed",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
