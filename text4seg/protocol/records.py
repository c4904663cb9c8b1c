"""The training record: its one schema (docs/RECORDS.md) and the accessors every stage reads it with.

Data building writes records with `record_features`; training (`split_record`), inference and
evaluation (`ground_truth`, `query_of`) read them through the functions here, so a column is named
and interpreted in one place. numpy and pycocotools only (no torch).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .images import check_pixels

if TYPE_CHECKING:
    from datasets import Features

TASKS = ("refer", "instance", "semantic", "conversation")
"""The values of a record's `task` column (``conversation``: chat records without masks, trained on, never
evaluated; `text4seg build llava`)."""


class RecordError(ValueError):
    """A record that does not follow the schema (the message names the record id and what is wrong)."""


def _value(dtype: str) -> dict[str, str]:
    return {"dtype": dtype, "_type": "Value"}


def _list(feature: dict[str, Any]) -> dict[str, Any]:
    return {"feature": feature, "_type": "List"}


def record_feature_spec(image_paths: bool = False) -> dict[str, Any]:
    """The record schema in the JSON form `datasets` saves (``Features.to_dict()``), without importing
    `datasets` (a build writes its Arrow files with pyarrow alone). ``image_paths``: images as path
    strings instead of embedded images."""
    string = _value("string")
    return {
        "id": string,
        "images": _list(string if image_paths else {"_type": "Image"}),
        "messages": _list({"role": string, "content": _list({"type": string, "text": string})}),
        "task": string,
        "expression": string,
        "labels": _list(string),
        "grid": _list(_value("int32")),
        "width": _value("int32"),
        "height": _value("int32"),
        "masks": _list(string),
        "box": _list(_value("float32")),
        "ignore": string,
        "source": {
            "dataset": string,
            "split": string,
            "image_id": _value("int64"),
            "ann_ids": _list(_value("int64")),
            "ref_id": _value("int64"),
            "sent_id": _value("int64"),
            "file_name": string,
        },
    }


def record_features(image_paths: bool = False) -> Features:
    """The `datasets.Features` of a record (`record_feature_spec`); ``image_paths``: images as path strings
    instead of embedded images."""
    from datasets import Features

    return Features.from_dict(record_feature_spec(image_paths))


def record_id(record: Mapping[str, Any]) -> str:
    """The record's id, or "?" when it has none (for messages)."""
    return str(record.get("id", "?"))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content if part.get("type", "text") == "text")


def answer_text(record: Mapping[str, Any]) -> str:
    """The text of the record's last (assistant) message; `RecordError` if there is none."""
    messages = record.get("messages")
    if not messages or messages[-1].get("role") != "assistant":
        raise RecordError(f"record {record_id(record)}: the last message must be the assistant answer")
    return _text_of(messages[-1]["content"])


def question_text(record: Mapping[str, Any]) -> str:
    """The text of the record's first user message (its question)."""
    for message in record.get("messages") or ():
        if message.get("role") == "user":
            return _text_of(message["content"])
    raise RecordError(f"record {record_id(record)}: no user message")


def image_placeholders(messages: list[Mapping[str, Any]]) -> int:
    """How many `{"type": "image"}` parts the messages hold."""
    return sum(
        1
        for m in messages
        if not isinstance(m["content"], str)
        for part in m["content"]
        if part.get("type") == "image"
    )


def split_record(record: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str, list[Any]]:
    """`(prompt messages, answer text, image values)` of a record, checked against the schema.

    The image values are as stored (read them with `text4seg.protocol.read_record_image`).
    """
    answer = answer_text(record)
    if not answer:
        raise RecordError(f"record {record_id(record)}: the assistant answer is empty")
    messages = record["messages"]
    images = list(record.get("images") or [])
    placeholders = image_placeholders(messages[:-1])
    if placeholders != len(images):
        raise RecordError(
            f"record {record_id(record)}: {len(images)} image(s) but {placeholders} image placeholder(s)"
        )
    return [dict(m) for m in messages[:-1]], answer, images


# -- ground truth -----------------------------------------------------------------------------------
def encode_counts(mask: np.ndarray) -> str:
    """COCO compressed-RLE ``counts`` string of a bool mask (the `masks` column; decode with `decode_counts`)."""
    from pycocotools import mask as mask_utils

    mask = np.asfortranarray(mask)  # no copy for the column-major masks pycocotools decodes
    rle = mask_utils.encode(mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8, order="F"))
    return rle["counts"].decode("ascii")


def decode_counts(counts: str, height: int, width: int) -> np.ndarray:
    """One H×W bool mask from its COCO compressed-RLE ``counts`` string (size checked first)."""
    from pycocotools import mask as mask_utils

    check_pixels(height, width, "a ground-truth mask")
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning, once per mask
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode({"size": [height, width], "counts": counts.encode()}).astype(bool)


@dataclass
class Truth:
    """A record's ground truth at full resolution."""

    task: str
    mask: np.ndarray  # union of all targets, H×W bool
    label_names: list[str]  # labels[1:] of the record
    masks: list[np.ndarray]  # one bool mask per label
    box: list[float] | None
    ignore: np.ndarray | None = None  # pixels left out of scoring (label maps' ignored values), H×W bool


def record_size(record: Mapping[str, Any]) -> tuple[int, int]:
    """`(height, width)` the record claims, checked to be positive and within the pixel limit."""
    try:
        height, width = int(record["height"]), int(record["width"])
    except (KeyError, TypeError, ValueError) as err:
        raise RecordError(f"record {record_id(record)}: no usable height/width ({err})") from err
    try:
        check_pixels(height, width, f"record {record_id(record)}")
    except ValueError as err:
        raise RecordError(str(err)) from err
    return height, width


def ground_truth(record: Mapping[str, Any]) -> Truth:
    """The record's masks decoded (one per label after the background) and their union."""
    rid = record_id(record)
    height, width = record_size(record)
    names = list(record["labels"][1:])
    counts = list(record["masks"])
    if len(counts) != len(names):
        raise RecordError(f"record {rid}: {len(counts)} masks for {len(names)} labels {names}")
    try:
        masks = [decode_counts(c, height, width) for c in counts]
    except Exception as err:  # pycocotools raises bare errors on corrupt strings
        raise RecordError(f"record {rid}: ground-truth mask does not decode as COCO RLE ({err})") from err
    union = np.zeros((height, width), dtype=bool, order="F")  # the decoded masks' own (column) order
    for m in masks:
        union |= m
    box = list(record.get("box") or []) or None
    return Truth(str(record["task"]), union, names, masks, box, _ignore(record, height, width))


def _ignore(record: Mapping[str, Any], height: int, width: int) -> np.ndarray | None:
    """The record's `ignore` column decoded (None when absent or empty: every pixel is scored)."""
    counts = record.get("ignore")
    if not counts:
        return None
    try:
        return decode_counts(counts, height, width)
    except Exception as err:
        raise RecordError(
            f"record {record_id(record)}: ignore mask does not decode as COCO RLE ({err})"
        ) from err


def query_of(record: Mapping[str, Any]) -> str | list[str]:
    """What a segmenter is asked for a record: the expression (refer, instance) or the class list (semantic)."""
    if record["task"] == "semantic":
        return list(record["labels"][1:])
    return str(record["expression"])


# -- reading a saved dataset ------------------------------------------------------------------------
def load_records(folder: str | Path) -> Any:
    """The `datasets.DatasetDict` (or `Dataset`) saved in ``folder``, readable wherever the folder now is.

    Image values that are relative path strings (builds that store each image once, under the dataset
    folder) are resolved against ``folder`` as records are read (a `datasets` transform; nothing is
    rewritten); a relative path that leaves the folder is refused with `RecordError`. Absolute paths and
    embedded images are returned as stored.
    """
    from datasets import load_from_disk

    root = Path(folder).resolve()
    if not root.exists():
        raise FileNotFoundError(f"dataset folder {folder} does not exist (make one with `text4seg build`)")
    data = load_from_disk(str(root))
    for split in data.values() if hasattr(data, "values") else [data]:
        if _stores_paths(split):
            split.set_transform(_resolver(root))
    return data


def stream_records(folder: str | Path, split: str = "train", num_shards: int = 16) -> Any:
    """One split of the dataset saved in ``folder`` as a `datasets.IterableDataset` (records read as they
    are iterated, shardable between processes and DataLoader workers), relative image paths resolved
    against ``folder`` as in `load_records`. ``num_shards`` is at most the number of records."""
    data = load_records(folder)
    if hasattr(data, "keys"):
        if split not in data:
            raise KeyError(f"dataset folder {folder} has no split {split!r} (it has {', '.join(data)})")
        data = data[split]
    stores_paths = _stores_paths(data)
    stream = data.with_format(None).to_iterable_dataset(num_shards=max(1, min(num_shards, len(data))))
    return stream.map(_resolver(Path(folder).resolve()), batched=True) if stores_paths else stream


def _stores_paths(split: Any) -> bool:
    feature = split.features.get("images")
    inner = getattr(feature, "feature", None)
    return getattr(inner, "dtype", None) == "string"


def resolve_image_path(root: Path, value: str, rid: str = "?") -> str:
    """`value` as stored in a record's `images`, resolved against the dataset folder `root` when relative."""
    path = Path(value)
    if path.is_absolute():
        return value
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root):
        raise RecordError(f"record {rid}: image path {value!r} leaves the dataset folder {root}")
    return str(resolved)


def _resolver(root: Path):
    def resolve(batch: dict[str, list]) -> dict[str, list]:
        if "images" in batch:
            ids = batch.get("id") or ["?"] * len(batch["images"])
            batch["images"] = [
                [resolve_image_path(root, v, rid) for v in values]
                for values, rid in zip(batch["images"], ids, strict=True)
            ]
        return batch

    return resolve
