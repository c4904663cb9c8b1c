"""Export of built records to other layouts: the LLaVA-style JSON list of Text4Seg's released data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from .storage import quiet_datasets

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict


def _llava_item(record: dict, root: Path | None) -> dict:
    first = record["images"][0] if record["images"] else None
    path = first["path"] if isinstance(first, dict) else first
    image = record["source"]["file_name"]
    # a relative path is a build's own images/ copy (read without load_records): the file_name stands
    if root is not None and path and Path(path).is_absolute() and Path(path).resolve().is_relative_to(root):
        image = Path(path).resolve().relative_to(root).as_posix()
    user, assistant = record["messages"][0], record["messages"][1]
    question = " ".join(part["text"] for part in user["content"] if part["type"] == "text")
    answer = "".join(part["text"] for part in assistant["content"] if part["type"] == "text")
    return {
        "id": record["id"],
        "image": image,
        "conversations": [
            {"from": "human", "value": f"<image>\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def to_llava_json(
    dataset: Dataset | DatasetDict, out_path: str | Path, image_root: str | Path | None = None
) -> int:
    """Export records as the LLaVA-style list of Text4Seg's released data; returns the count.

    Each item is ``{"id", "image", "conversations": [{"from": "human", "value": "<image>\\n…"},
    {"from": "gpt", "value": answer}]}``; ``image`` is the path relative to ``image_root`` when
    the image lies under it, else the annotation's ``file_name`` (the path under the build's own
    ``images/`` folder for a build that stores each image once, the default).
    """
    from datasets import DatasetDict, Image, List, concatenate_datasets

    if isinstance(dataset, DatasetDict):
        dataset = concatenate_datasets([dataset[split] for split in sorted(dataset)])
    dataset = dataset.select_columns(["id", "images", "messages", "source"])
    if isinstance(dataset.features["images"].feature, Image):
        with quiet_datasets(True):
            dataset = dataset.cast_column("images", List(Image(decode=False)))
    root = Path(image_root).resolve() if image_root else None
    items = [_llava_item(record, root) for record in dataset]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return len(items)
