"""Does a trained model know where an object STARTS? A teacher-forced probe for demo runs.

For held-out records, the probe reads the model's probability that each row is not all-background
("others *16"), at the first token of the row, for rows up to and including the first object row.
It then reports the AUC of object rows against background rows. Under plain teacher forcing a model
can look good by continuing an object once the previous row holds it; at the first object row it
cannot, so this AUC measures localisation itself (0.5 = chance).

Run: `.venv/bin/python bench/probe_localisation.py RUN_DIR [N]`, where RUN_DIR is a `text4seg demo --out`
folder (it reads RUN_DIR/model and the test split of the records the run trained on, RUN_DIR/data/records).
"""

from __future__ import annotations

import argparse

import numpy as np


def first_row_scores(run_dir: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(P(object row), is object row) for every row up to each record's first object row."""
    import datasets
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import text4seg as t4s
    from text4seg.train.collate import IGNORE_INDEX, Collator

    processor = AutoProcessor.from_pretrained(f"{run_dir}/model")
    model = AutoModelForImageTextToText.from_pretrained(f"{run_dir}/model").eval()

    records = datasets.load_from_disk(f"{run_dir}/data/records")["test"]
    tok = processor.tokenizer
    background = sorted(
        {
            i
            for text in ("others *16\n ", "others *16\n")
            for i in tok(text, add_special_tokens=False)["input_ids"]
        }
    )
    collator = Collator(processor)
    scores, truths = [], []
    for record in records.select(range(min(n, len(records)))):
        encoded = collator.encode(record)
        ids = encoded.features["input_ids"][0]
        with torch.no_grad():
            probs = model(**encoded.features).logits[0].softmax(-1)
        answer = [p for p, label in enumerate(encoded.labels) if label != IGNORE_INDEX]
        starts = [p for p in answer if tok.decode([int(ids[p - 1])]).endswith(("<seg>", "\n "))]
        grid = t4s.decode(record["messages"][-1]["content"][0]["text"]).grid
        first = next((r for r in range(grid.shape[0]) if grid[r].any()), grid.shape[0] - 1)
        for row, position in enumerate(starts[: first + 1]):
            scores.append(1.0 - float(probs[position - 1, background].sum()))
            truths.append(bool(grid[row].any()))
    return np.asarray(scores), np.asarray(truths)


def auc(scores: np.ndarray, truths: np.ndarray) -> float:
    """Probability that a random object row outscores a random background row (ties count half)."""
    pos, neg = scores[truths], scores[~truths]
    if not len(pos) or not len(neg):
        return float("nan")
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("n", nargs="?", type=int, default=60, help="held-out records to probe (60)")
    args = parser.parse_args()
    scores, truths = first_row_scores(args.run_dir, args.n)
    print(f"rows probed {len(scores)}, first object rows {int(truths.sum())}")
    print(
        f"mean P(object) at first object rows {scores[truths].mean():.3f}, at background rows {scores[~truths].mean():.3f}"
    )
    print(f"first-object-row AUC {auc(scores, truths):.3f} (0.5 = chance)")


if __name__ == "__main__":
    main()
