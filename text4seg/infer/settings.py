"""Deprecated: moved to `text4seg.protocol.asking` (the contract shared by data, training and inference)."""

import sys
import warnings

from text4seg.protocol import asking as _moved

warnings.warn(
    "text4seg.infer.settings moved to text4seg.protocol.asking; this alias will be removed",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = _moved
