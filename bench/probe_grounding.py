"""Does a trained demo model segment the shape it was ASKED about? Two probes on a demo folder.

1. Hits: for each evaluated test expression (RUN_DIR/eval/samples.jsonl), the prediction is scored
   against the referred shape and against every other annotation of the image. It counts as "target"
   when the referred shape overlaps it best, "distractor" when another one does (with what that one
   shares with the target: colour, kind, both or nothing), "nothing" or "empty" otherwise. Grouped by
   the image's number of annotations: with k shapes, a model that ignores the expression hits the
   target about 1/k of the time.
2. Swap: teacher-forced answer loss of test records with their own question, and with the question of
   another shape of the same image (same image, same descriptor). Equal losses mean the expression is
   not read at all. For a run trained with answers opening with colour and kind (`demo.answer: prefix`),
   the swapped answer opens with the colour and kind of the question asked, so that the difference lies
   in the descriptor.

Both read the records the run trained on, as it saved them (RUN_DIR/data/records, answers included).
Run: `.venv/bin/python bench/probe_grounding.py RUN_DIR [IMAGES]`, RUN_DIR a `text4seg demo --out`
folder; IMAGES (default 80) bounds the swap probe.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from typing import Any

import numpy as np

RECORDS = "data/records"
"""Where a demo run saved the records it trained on (examples/demo/prepare.py)."""


def answer_form(run_dir: str) -> str:
    """The answer form the run trained on (`demo.answer` in its report.json: prefix, block or sentence)."""
    report = json.loads(open(f"{run_dir}/report.json", encoding="utf-8").read())
    return report["config"]["demo"]["answer"]


def _colour(image: np.ndarray, mask: np.ndarray) -> str:
    from text4seg.data.synthetic import COLORS

    mean = image[mask].mean(0)
    return min(COLORS, key=lambda name: float(((np.asarray(COLORS[name]) - mean) ** 2).sum()))


def hits(run_dir: str) -> dict[int, Counter]:
    """Per number of annotations in the image: counts of target / distractor / nothing / empty hits."""
    import datasets

    import text4seg as t4s
    from text4seg.data.masks import decode_segmentation
    from text4seg.protocol.records import ground_truth

    records = datasets.load_from_disk(f"{run_dir}/{RECORDS}")["test"]
    instances = json.loads(open(f"{run_dir}/data/source/instances.json", encoding="utf-8").read())
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in instances["annotations"]:
        by_image[int(ann["image_id"])].append(ann)
    out: dict[int, Counter] = defaultdict(Counter)
    for line in open(f"{run_dir}/eval/samples.jsonl", encoding="utf-8"):
        sample = json.loads(line)
        record = records[int(sample["index"])]
        truth = ground_truth(record).mask
        try:
            grid = t4s.decode(sample["text"] or "").grid != 0
        except ValueError:
            grid = np.zeros((16, 16), bool)
        pred = np.asarray(t4s.grid_to_mask(grid, truth.shape, method="nearest"), bool)
        image = np.asarray(record["images"][0].convert("RGB"), dtype=np.float64)
        anns = by_image[int(record["source"]["image_id"])]
        counts = out[len(anns)]
        counts["expressions"] += 1
        counts["iou_sum"] += float(sample["coarse"]["iou"])
        if not pred.any():
            counts["empty"] += 1
            continue
        target, best, best_iou = None, None, 0.0
        for ann in anns:
            mask = decode_segmentation(ann["segmentation"], *truth.shape)
            if np.array_equal(mask, truth):
                target = (ann, mask)
                continue
            union = (mask | pred).sum()
            iou = (mask & pred).sum() / union if union else 0.0
            if iou > best_iou:
                best, best_iou = (ann, mask), iou
        if float(sample["coarse"]["iou"]) > 0 and float(sample["coarse"]["iou"]) >= best_iou:
            counts["target"] += 1
        elif best is None:
            counts["nothing"] += 1
        else:
            counts["distractor"] += 1
            if target is not None:
                kind = best[0]["category_id"] == target[0]["category_id"]
                colour = _colour(image, best[1]) == _colour(image, target[1])
                shared = (
                    "kind+colour"
                    if kind and colour
                    else "kind"
                    if kind
                    else "colour"
                    if colour
                    else "nothing"
                )
                counts[f"distractor shares {shared}"] += 1
    return dict(out)


def swap(run_dir: str, images: int) -> tuple[float, float, int]:
    """(mean loss with own question, mean loss with another shape's question, pairs)."""
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from text4seg.models import registry
    from text4seg.train.collate import Collator
    from text4seg.train.loss import answer_loss

    model = AutoModelForImageTextToText.from_pretrained(f"{run_dir}/model").eval()
    processor = AutoProcessor.from_pretrained(f"{run_dir}/model")
    records = datasets.load_from_disk(f"{run_dir}/{RECORDS}")["test"]
    prefixed = answer_form(run_dir) == "prefix"
    groups: dict[int, list[int]] = defaultdict(list)
    for index, source in enumerate(records["source"]):
        groups[int(source["image_id"])].append(index)
    collate = Collator(processor, max_length=4096, answer_token_type=registry.answer_token_type(model))
    rng = np.random.default_rng(0)

    def loss(record: dict[str, Any]) -> float:
        batch = collate([record])
        batch.pop("skipped", None)
        batch.pop("ids", None)
        with torch.no_grad():
            return float(answer_loss(model, batch))

    own, swapped = [], []
    for indices in list(groups.values())[:images]:
        group = [records[i] for i in indices]
        answer = [r["messages"][-1]["content"][0]["text"] for r in group]
        for a, record in enumerate(group):
            others = [b for b in rng.permutation(len(group)) if answer[b] != answer[a]]
            if not others:
                continue
            other = group[int(others[0])]
            reply = record["messages"][-1]
            if prefixed:  # the other question's colour and kind, then this record's descriptor
                head = answer[int(others[0])].split("\n", 1)[0]
                body = answer[a].split("\n", 1)[1]
                reply = dict(reply, content=[{"type": "text", "text": f"{head}\n{body}"}])
            asked_else = dict(record, messages=[other["messages"][0], *record["messages"][1:-1], reply])
            own.append(loss(record))
            swapped.append(loss(asked_else))
    return float(np.mean(own)), float(np.mean(swapped)), len(own)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("images", nargs="?", type=int, default=80)
    args = parser.parse_args()
    for shapes, counts in sorted(hits(args.run_dir).items()):
        n = counts.pop("expressions")
        mean_iou = counts.pop("iou_sum") / n
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(
            f"{shapes} annotations: {n} expressions, mean IoU {mean_iou:.3f}, target hit {counts['target'] / n:.2f}; {parts}"
        )
    own, swapped, pairs = swap(args.run_dir, args.images)
    print(
        f"swap: answer loss {own:.3f} with its own question, {swapped:.3f} with another shape's ({pairs} pairs)"
    )


if __name__ == "__main__":
    main()
