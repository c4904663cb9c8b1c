"""Segmenter settings saved beside a model: how the model must be asked (no torch needed).

A model trained on records with a fixed target label, a grid other than 16×16 or answers without a
sentence must be asked the same way. `text4seg train` writes MODEL/text4seg.json from its training
records (`settings_from_records`), the demo and `Segmenter.save_settings` from a segmenter, and
`Segmenter.from_pretrained` (so `predict` and `evaluate`) reads it as its defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from text4seg.codec import TEXT4SEG, descriptor_grid_size, extract_segments

SETTINGS_FILE = "text4seg.json"
"""The settings file's name in a model folder."""
SETTINGS = ("grid", "target_label", "answer_sentences", "question", "upsample", "background_bias")


def load_settings(path_or_id: str | Path) -> dict[str, Any]:
    """The settings saved in a model folder's text4seg.json (empty for hub ids and folders without one)."""
    path = Path(path_or_id) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable settings file ({err})") from err
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(saved).__name__}")
    unknown = sorted(set(saved) - set(SETTINGS))
    if unknown:
        raise ValueError(f"{path}: unknown settings {unknown}; known: {list(SETTINGS)}")
    settings = {k: v for k, v in saved.items() if v is not None}
    if "grid" in settings:
        settings["grid"] = tuple(settings["grid"]) if isinstance(settings["grid"], list) else settings["grid"]
    return settings


def settings_from_records(records: Any, limit: int = 2000) -> dict[str, Any]:
    """The settings a model trained on `records` (docs/RECORDS.md) must be asked with.

    Reads up to `limit` records: the grid when all share one (the `grid` column, else read from the
    answers' descriptors); the fixed target label when every
    referring record labels its target with the same word and that word is not the expression
    (`build --target-label`); answer sentences "none" when no answer has a sentence before `<seg>`.
    """
    columns = [c for c in ("grid", "task", "labels", "expression", "messages") if c in _columns(records)]
    rows = records.select_columns(columns) if hasattr(records, "select_columns") else records
    rows = rows.select(range(min(limit, len(rows)))) if hasattr(rows, "select") else list(rows)[:limit]
    settings: dict[str, Any] = {}
    grids = {
        tuple(r["grid"]) if r.get("grid") else _answer_grid(_answer(r)) for r in rows if r.get("messages")
    }
    grids.discard(None)
    if len(grids) == 1:
        settings["grid"] = list(grids.pop())
    refer = [r for r in rows if r.get("task") == "refer" and len(r.get("labels") or ()) == 2]
    fixed = {r["labels"][1] for r in refer}
    if len(fixed) == 1 and any(r["labels"][1] != r.get("expression") for r in refer):
        settings["target_label"] = fixed.pop()
    answers = [_answer(r) for r in rows if r.get("messages")]
    if answers and all(a.startswith(TEXT4SEG.open_tag) for a in answers):
        settings["answer_sentences"] = "none"
    return settings


def _columns(records: Any) -> list[str]:
    names = getattr(records, "column_names", None)
    if names is not None:
        return list(names)
    return list(records[0]) if len(records) else []


def _answer(record: dict[str, Any]) -> str:
    content = record["messages"][-1]["content"]
    return content if isinstance(content, str) else "".join(c.get("text") or "" for c in content)


def _answer_grid(answer: str) -> tuple[int, int] | None:
    """(rows, cols) of the answer's first descriptor, when it parses strictly; else None."""
    segments = extract_segments(answer)
    return descriptor_grid_size(segments[0]) if segments else None


def write_settings(folder: str | Path, settings: dict[str, Any]) -> Path:
    """Write `settings` (keys of `SETTINGS`) to FOLDER/text4seg.json."""
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown settings {unknown}; known: {list(SETTINGS)}")
    path = Path(folder) / SETTINGS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return path
