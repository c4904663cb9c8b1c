"""Annotations to training records: COCO, RefCOCO/+/g, gRefCOCO and synthetic shapes.

* `make_synthetic` / `generate_sample`: small real-format datasets of coloured shapes;
* `load_coco`, `load_refcoco`, `load_grefcoco`: annotation files -> record specs (RefCOCO pickles are
  read by `load_pickle`, a restricted unpickler that never runs code from the file);
* `build` (+ `BuildConfig`): specs -> `datasets.DatasetDict` of chat records (docs/RECORDS.md),
  parallel, cached, with a build report; `load_records` reads a build back (wherever its folder now
  is); `to_llava_json` exports the LLaVA-style list.

Light to import: `datasets` is imported only when records are read (a build writes its Arrow files with
pyarrow alone, `text4seg.data.arrow_files`); the synthetic generator on first use of its names.
"""

from text4seg.data.build import BuildConfig, BuildResult, build, load_records, to_llava_json
from text4seg.data.coco import load_coco
from text4seg.data.refer import load_grefcoco, load_refcoco
from text4seg.data.safe_pickle import UnsafePickleError, load_pickle
from text4seg.data.spec import DataError

_SYNTHETIC = ("Expression", "Shape", "SyntheticPaths", "SyntheticSample", "generate_sample", "iter_samples")
_LAZY = {name: "text4seg.data.synthetic" for name in (*_SYNTHETIC, "make_synthetic")}
"""Names imported on first use (the synthetic generator is ~0.03 s of a build's imports it never uses)."""


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


__all__ = [
    "BuildConfig",
    "BuildResult",
    "DataError",
    "Expression",
    "Shape",
    "SyntheticPaths",
    "SyntheticSample",
    "UnsafePickleError",
    "build",
    "generate_sample",
    "iter_samples",
    "load_coco",
    "load_grefcoco",
    "load_records",
    "load_pickle",
    "load_refcoco",
    "make_synthetic",
    "to_llava_json",
]
