"""Annotations to training records: COCO, RefCOCO/+/g, gRefCOCO and synthetic shapes.

Light to import: the loaders and the record builder (which need `datasets`) live in submodules.
"""

from text4seg.data.synthetic import (
    Expression,
    Shape,
    SyntheticPaths,
    SyntheticSample,
    generate_sample,
    iter_samples,
    make_synthetic,
)

__all__ = [
    "Expression",
    "Shape",
    "SyntheticPaths",
    "SyntheticSample",
    "generate_sample",
    "iter_samples",
    "make_synthetic",
]
