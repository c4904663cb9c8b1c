"""Conversation records from LLaVA-format or ms-swift / Text4Seg ``query``/``response`` JSON files.

Two layouts are read (chosen from the items' keys, or named):

* ``llava``: ``[{"id", "image", "conversations": [{"from": "human"|"gpt", "value": "..."}]}]``; an item
  without ``"image"`` is text-only, ``"image"`` may also be a list of files;
* ``swift``: ``[{"query": "...<image>...", "response": "...", "images": ["path"], "history": [[q, a]]}]``
  (Text4Seg's released data and ms-swift's format).

Each usable item becomes one record of the one schema (`text4seg.protocol.records.record_features`) with
task ``"conversation"``: the turns as ``messages`` (user content ``[{"type": "image"}, {"type": "text"}]``
with each ``<image>`` marker replaced by an image part where it stood; no marker: the images open the
first user turn), no masks, labels, box or grid, ``width``/``height`` of the first image (0 when
text-only). Answers holding ``<seg>`` descriptors keep them and must decode with the strict decoder.

Bad items are skipped and reported with their id and reason (`IssueLog`, ``build_report.json``), or end
the build in strict mode: an empty conversation, a turn that is not ``{"from", "value"}`` text, an unknown
role, turns not alternating user/assistant from the user to a final answer, a missing or unreadable
image, an image path that leaves the image folder, ``<image>`` markers that do not match the images, a
descriptor that does not decode. A file that is not a JSON list of items is one `ValueError` naming it.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text4seg.codec import TEXT4SEG, DescriptorParseError, decode, descriptor_grid_size, extract_segments

from .image_files import ImageFileProblem, locate_image, upright_size
from .issues import IssueLog
from .storage import report_counts

FORMATS = ("llava", "swift")
IMAGE_MARKER = "<image>"
ROLES = {"human": "user", "gpt": "assistant"}
"""LLaVA's ``from`` values -> the schema's roles."""


class ConversationError(ValueError):
    """An item that cannot become a record; ``reason`` is its short code in the build report."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ConversationSet:
    """One JSON file of conversations, the folder its image paths are relative to, and its naming."""

    json: Path
    images: Path
    format: str | None = None  # one of FORMATS; None: chosen from the items' keys
    name: str = "llava"
    split: str = "train"


@dataclass(frozen=True)
class _Item:
    turns: list[tuple[str, str]]  # (role, text)
    images: list[str]  # file names as written, relative to the image folder


def read_items(path: str | Path) -> list[Any]:
    """The JSON list in ``path``; `ValueError` naming the file when it is not valid JSON or not a list."""
    path = Path(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deep") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of conversations, got a {type(items).__name__}")
    return items


def detect_format(items: list[Any], path: str | Path) -> str:
    """``llava`` when the first item has ``conversations``, ``swift`` when it has ``query``."""
    first = next((item for item in items if isinstance(item, dict)), {})
    if "conversations" in first:
        return "llava"
    if "query" in first:
        return "swift"
    raise ValueError(
        f"{path}: cannot tell the format (no 'conversations' or 'query' in the first item); pass --format"
    )


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ConversationError("bad_turn", f"{what} is a {type(value).__name__}, not text")
    return value


def _image_names(value: Any) -> list[str]:
    """File names of an item's ``image``/``images``: one name, a list of names, or ms-swift's
    ``[{"path": name}]``."""
    names = [] if value is None else [value] if isinstance(value, str) else value
    if isinstance(names, list):
        names = [n["path"] if isinstance(n, dict) and "path" in n else n for n in names]
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConversationError("bad_image_path", f"images must be file names, got {value!r}"[:200])
    return names


def _llava(item: dict) -> _Item:
    turns = item.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ConversationError("empty_conversation", "no turns in 'conversations'")
    parsed = []
    for k, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise ConversationError("bad_turn", f"turn {k} is not an object")
        role = turn.get("from")
        if role not in ROLES:
            raise ConversationError("unknown_role", f"turn {k} is from {role!r}, not one of {sorted(ROLES)}")
        parsed.append((ROLES[role], _text(turn.get("value"), f"turn {k}'s value")))
    return _Item(parsed, _image_names(item.get("image")))


def _swift(item: dict) -> _Item:
    history = item.get("history") or []
    if not isinstance(history, list):
        raise ConversationError("bad_turn", "history is not a list of [query, response] pairs")
    turns = []
    for k, pair in enumerate([*history, [item.get("query"), item.get("response")]]):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ConversationError("bad_turn", f"history entry {k} is not a [query, response] pair")
        turns += [("user", _text(pair[0], f"query {k}")), ("assistant", _text(pair[1], f"response {k}"))]
    if not any(text.strip() for _, text in turns):
        raise ConversationError("empty_conversation", "query and response are empty")
    return _Item(turns, _image_names(item.get("images")))


READERS = {"llava": _llava, "swift": _swift}
"""Format -> reader of one item into turns and image names."""


def _check_order(turns: list[tuple[str, str]]) -> None:
    for k, (role, text) in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if role != expected:
            raise ConversationError("bad_turn_order", f"turn {k} is {role}, expected {expected}")
        if role == "assistant" and not text.strip():
            raise ConversationError("empty_answer", f"turn {k} (assistant) is empty")
    if turns[-1][0] != "assistant":
        raise ConversationError("bad_turn_order", "the conversation does not end with an assistant answer")


def check_descriptors(text: str) -> None:
    """Every ``<seg>`` block of an answer must decode with the strict decoder (any grid size)."""
    fmt = TEXT4SEG
    parts = extract_segments(text, fmt)
    if text.count(fmt.open_tag) != len(parts):
        raise ConversationError("bad_descriptor", f"a {fmt.open_tag} block is not closed")
    for k, part in enumerate(parts):
        try:
            size = descriptor_grid_size(part, fmt, strict=True)
            decode(part, fmt.with_grid(size), strict=True)
        except DescriptorParseError as err:
            raise ConversationError("bad_descriptor", f"descriptor {k}: {err}") from None


def _content(text: str, first: bool, n_images: int) -> list[dict]:
    """A user turn's parts: an image part where each marker stood (or ``n_images`` first), text stripped."""
    content: list[dict] = [{"type": "image", "text": None} for _ in range(n_images if first else 0)]
    for k, piece in enumerate(text.split(IMAGE_MARKER)):
        if k:
            content.append({"type": "image", "text": None})
        if piece.strip():
            content.append({"type": "text", "text": piece.strip()})
    return content


def messages_of(item: _Item) -> list[dict]:
    """The schema's ``messages`` of checked turns (`ConversationError` if markers and images disagree)."""
    markers = [text.count(IMAGE_MARKER) for _, text in item.turns]
    if any(n for (role, _), n in zip(item.turns, markers, strict=True) if role == "assistant"):
        raise ConversationError("image_marker_mismatch", f"an assistant turn holds {IMAGE_MARKER}")
    if sum(markers) not in (0, len(item.images)):
        raise ConversationError(
            "image_marker_mismatch",
            f"{sum(markers)} {IMAGE_MARKER} marker(s) for {len(item.images)} image(s)",
        )
    leading = len(item.images) if sum(markers) == 0 else 0
    messages = []
    for k, (role, text) in enumerate(item.turns):
        if role == "user":
            content = _content(text, k == 0, leading)
        else:
            check_descriptors(text)
            content = [{"type": "text", "text": text}]
        messages.append({"role": role, "content": content})
    return messages


def _image(root: Path, name: str) -> tuple[Path, tuple[int, int]]:
    try:
        path = locate_image(root, name)
        return path, upright_size(path, name)
    except ImageFileProblem as problem:
        raise ConversationError(problem.reason, problem.detail) from None


def _images(root: Path, names: list[str], cache: dict) -> tuple[list[dict], int, int]:
    """The image values and the first image's upright (width, height); (0, 0) when text-only. ``cache``
    holds each name's checked path and size (or its problem) for the rest of the build."""
    values, sizes = [], []
    for name in names:
        if name not in cache:
            try:
                cache[name] = _image(root, name)
            except ConversationError as err:
                cache[name] = err
        found = cache[name]
        if isinstance(found, ConversationError):
            raise found
        values.append({"path": str(found[0]), "bytes": None})
        sizes.append(found[1])
    width, height = sizes[0] if sizes else (0, 0)
    return values, width, height


def make_record(item: Any, rid: str, data: ConversationSet, fmt: str, cache: dict | None = None) -> dict:
    """One conversation record; `ConversationError` when the item cannot be one. ``cache``: image checks
    kept between the items of one build (many items share an image)."""
    if not isinstance(item, dict):
        raise ConversationError("bad_item", f"an item is a {type(item).__name__}, not an object")
    parsed = READERS[fmt](item)
    _check_order(parsed.turns)
    messages = messages_of(parsed)
    images, width, height = _images(data.images, parsed.images, {} if cache is None else cache)
    first = parsed.images[0] if parsed.images else ""
    return {
        "id": rid,
        "images": images,
        "messages": messages,
        "task": "conversation",
        "expression": "",
        "labels": [],
        "grid": [],
        "width": width,
        "height": height,
        "masks": [],
        "box": [],
        "ignore": "",
        "source": {
            "dataset": data.name,
            "split": data.split,
            "image_id": zlib.crc32(first.encode("utf-8")) if first else -1,
            "ann_ids": [],
            "ref_id": -1,
            "sent_id": -1,
            "file_name": first,
        },
    }


def _ids(items: list[Any], data: ConversationSet) -> Iterator[tuple[Any, str]]:
    """Each item with its record id ``name/split/<item id or index>`` (a repeated id gets ``#index``)."""
    seen: set[str] = set()
    for index, item in enumerate(items):
        given = item.get("id") if isinstance(item, dict) else None
        rid = f"{data.name}/{data.split}/{given if given not in (None, '') else index}"
        if rid in seen:
            rid = f"{rid}#{index}"
        seen.add(rid)
        yield item, rid


def load_set(data: ConversationSet) -> tuple[list[Any], str]:
    """The items of a set's JSON file and their format; `ValueError` naming the file when unusable."""
    items = read_items(data.json)
    fmt = data.format or detect_format(items, data.json)
    if fmt not in READERS:
        raise ValueError(f"unknown conversation format {fmt!r}; known: {', '.join(FORMATS)}")
    return items, fmt


def iter_records(data: ConversationSet, log: IssueLog, loaded: tuple[list[Any], str] | None = None):
    """Every usable item's record, in file order; the others are added to ``log`` and skipped.
    ``loaded``: the set's `load_set` result when already read."""
    items, fmt = loaded or load_set(data)
    cache: dict = {}
    for item, rid in _ids(items, data):
        try:
            yield make_record(item, rid, data, fmt, cache)
        except ConversationError as err:
            log.add(rid, err.reason, err.detail, data.json)


IMAGE_STORES = ("embed", "paths", "folder")
"""Where a build's images go, as for the other builds (docs/RECORDS.md): embedded in each record, absolute
path strings, or copied once under OUT/images with paths relative to OUT."""


class _ImageStore:
    def __init__(self, kind: str) -> None:
        if kind not in IMAGE_STORES:
            raise ValueError(f"image_store must be one of {IMAGE_STORES}, got {kind!r}")
        self.kind = kind
        self.files: dict[str, Path] = {}  # folder store: relative path in the build -> source

    def value(self, image: dict, root: Path) -> Any:
        path = Path(image["path"])
        if self.kind == "embed":
            return image
        if self.kind == "paths":
            return str(path)
        relative = "images/" + path.relative_to(root.resolve()).as_posix()
        if self.files.setdefault(relative, path) != path:
            raise ValueError(f"{relative} names both {self.files[relative]} and {path}; build them apart")
        return relative


def build_conversations(
    sets: list[ConversationSet],
    out_dir: str | Path,
    *,
    strict: bool = False,
    progress: bool = True,
    image_store: str = "folder",
    copy_images: bool = False,
) -> dict:
    """Write the records of every set to ``out_dir`` as a `datasets.DatasetDict` (one split per set's
    ``split``) with a build_report.json listing each skipped item; written atomically. ``image_store``:
    one of `IMAGE_STORES`; the default ``folder`` stores each image once in ``out_dir/images``, hard-linked
    to its source where possible (``copy_images``: always copied); read such a build with
    `text4seg.protocol.records.load_records`.
    Returns the report."""
    from datasets import Dataset, DatasetDict
    from tqdm.auto import tqdm

    from text4seg.protocol.records import record_features

    from .storage import SplitTables, check_out_dir, save_atomically

    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    store = _ImageStore(image_store)
    tables = SplitTables(record_features(image_paths=image_store != "embed").arrow_schema)
    log = IssueLog(strict)
    loaded = [load_set(data) for data in sets]  # every file checked before anything is built
    for data, (items, fmt) in zip(sets, loaded, strict=True):
        records = iter_records(data, log, (items, fmt))
        for record in tqdm(records, desc=data.json.name, total=len(items), disable=not progress):
            record["images"] = [store.value(image, data.images) for image in record["images"]]
            tables.add(record)
    dataset = DatasetDict({split: Dataset(table) for split, table in tables.finish().items()})
    report = {**_report(sets, tables, log), "image_store": image_store, "images_stored": len(store.files)}
    return save_atomically(dataset, out_dir, report, not progress, store.files, not copy_images)


def _report(sets: list[ConversationSet], tables, log: IssueLog) -> dict:
    return {
        "kind": "conversations",
        "sets": [
            {"json": str(s.json), "images": str(s.images), "format": s.format or "auto", "split": s.split}
            for s in sets
        ],
        **report_counts(tables, log.items),
    }


__all__ = [
    "FORMATS",
    "IMAGE_STORES",
    "ConversationError",
    "ConversationSet",
    "build_conversations",
    "check_descriptors",
    "detect_format",
    "iter_records",
    "load_set",
    "make_record",
    "messages_of",
    "read_items",
]
