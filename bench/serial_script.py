"""A bare Text4Seg-style serial conversion, the baseline `text4seg build refcoco` is measured against.

What Text4Seg's own data scripts do, and nothing more: read the refs pickle and the instances json,
and for each sentence decode its annotation(s) with pycocotools, resize the mask to the grid with PIL
NEAREST, write the R-RLE text, and dump every conversation into one JSON list. No validation of the
annotations or the image files, no full-resolution ground truth, no report.

Run: `.venv/bin/python bench/serial_script.py REFS_PICKLE INSTANCES_JSON OUT_JSON [--grid 16]`
(bench/bench_data.py --serial times it against the build).
"""

from __future__ import annotations

import argparse
import json
import pickle
import warnings

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from text4seg.codec import TEXT4SEG, grid_to_text


def _mask(ann: dict, height: int, width: int) -> np.ndarray:
    segmentation = ann["segmentation"]
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle)


def _grid(anns: list[dict], height: int, width: int, grid: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=np.uint8)
    for ann in anns:
        mask |= _mask(ann, height, width)
    return np.asarray(Image.fromarray(mask * 255).resize((grid, grid), Image.NEAREST)) > 0


def convert(refs_path: str, instances_path: str, grid: int) -> list[dict]:
    """One LLaVA-style conversation per sentence of every ref."""
    with open(refs_path, "rb") as f:
        refs = pickle.load(f)  # trusted input here: the synthetic pickle this benchmark wrote
    with open(instances_path) as f:
        instances = json.load(f)
    images = {image["id"]: image for image in instances["images"]}
    anns = {ann["id"]: ann for ann in instances["annotations"]}
    fmt = TEXT4SEG.with_grid(grid)
    out = []
    for ref in refs:
        image = images[ref["image_id"]]
        ids = ref["ann_id"] if isinstance(ref["ann_id"], list) else [ref["ann_id"]]
        cells = _grid([anns[a] for a in ids], image["height"], image["width"], grid)
        for sentence in ref["sentences"]:
            text = grid_to_text(cells.astype(np.int32), [fmt.background, sentence["sent"]], fmt)
            out.append(
                {
                    "id": f"{ref['ref_id']}/{sentence['sent_id']}",
                    "image": image["file_name"],
                    "conversations": [
                        {"from": "human", "value": f"<image>\nPlease segment {sentence['sent']}."},
                        {"from": "gpt", "value": f"<seg>{text}</seg>"},
                    ],
                }
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("refs")
    parser.add_argument("instances")
    parser.add_argument("out")
    parser.add_argument("--grid", type=int, default=16)
    args = parser.parse_args()
    records = convert(args.refs, args.instances, args.grid)
    with open(args.out, "w") as f:
        json.dump(records, f)
    print(f"{len(records)} sentences -> {args.out}")


if __name__ == "__main__":
    main()
