"""Ground truth for the data tests from pycocotools' own ``COCO.annToMask``, and record accessors."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO


def coco_index(instances) -> COCO:
    """pycocotools' COCO index of an instances file (its prints silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(instances))


def union(coco: COCO, ann_ids) -> np.ndarray | None:
    """The union of the annotations' masks as pycocotools decodes them (None for no annotation)."""
    out = None
    for ann_id in ann_ids:
        mask = coco.annToMask(coco.anns[ann_id]).astype(bool)
        out = mask if out is None else out | mask
    return out


def answer(record) -> str:
    return record["messages"][1]["content"][0]["text"]


def question(record) -> str:
    return record["messages"][0]["content"][1]["text"]


def decode_masks(record) -> list[np.ndarray]:
    """A record's ``masks`` column decoded, one bool mask per label after the background."""
    size = [record["height"], record["width"]]
    return [mask_utils.decode({"size": size, "counts": c.encode()}).astype(bool) for c in record["masks"]]
