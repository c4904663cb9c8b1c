"""How a model must be asked: the typed settings saved beside a model as ``text4seg.json``.

A model trained on records with a fixed target label, a grid other than 16×16 or answers without a
template sentence must be asked the same way. `Asking` holds those settings; it is written from what a
model was trained on (`text4seg train` writes it from the training data: the dataset folder's own
``text4seg.json`` when the data's maker saved one, else `Asking.from_records`) and read back by
`Segmenter.from_pretrained`, so `predict` and `evaluate` ask as training did. No torch needed.

The dict-level functions (`load_settings`, `write_settings`, `settings_from_records`) are the same
settings as plain dicts, for callers that pass them on as keyword arguments.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from text4seg.codec import TEXT4SEG, descriptor_grid_size, extract_segments

from .records import answer_text
from .templates import QUESTION_STYLES, refer_answer_sentences

SETTINGS_FILE = "text4seg.json"
"""The settings file's name in a model (or dataset) folder."""
ANSWER_FORMS = ("templates", "free", "none")
"""`answer_sentences`: a template sentence before `<seg>`, any sentence, or none."""
UPSAMPLE_METHODS = ("nearest", "bilinear", "guided")


@dataclass(frozen=True)
class Asking:
    """How a model must be asked (all fields optional; None means the segmenter's default).

    ``grid``: (rows, cols) of the descriptor; ``target_label``: the fixed word written for referred cells
    (None: the expression itself); ``answer_sentences``: one of `ANSWER_FORMS`; ``question``: a question
    template with ``{expression}`` (or ``{classes}``); ``upsample``: grid-to-pixels method;
    ``background_bias``: the logit offset calibrated for greedy decoding; ``question_style``: one of
    `templates.QUESTION_STYLES`, the wording used when no ``question`` is given (``text4seg`` for
    Text4Seg's checkpoints).
    """

    grid: tuple[int, int] | None = None
    target_label: str | None = None
    answer_sentences: str | None = None
    question: str | None = None
    upsample: str | None = None
    background_bias: float | None = None
    question_style: str | None = None

    def __post_init__(self) -> None:
        if self.grid is not None:
            object.__setattr__(self, "grid", _grid(self.grid))
        for name in ("target_label", "question"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")
        _choice("answer_sentences", self.answer_sentences, ANSWER_FORMS)
        _choice("upsample", self.upsample, UPSAMPLE_METHODS)
        _choice("question_style", self.question_style, QUESTION_STYLES)
        if self.background_bias is not None:
            bias = self.background_bias
            if isinstance(bias, bool) or not isinstance(bias, (int, float)) or not math.isfinite(bias):
                raise ValueError(f"background_bias must be a finite number, got {bias!r}")

    # -- dicts and files ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "settings") -> Asking:
        """From a dict of `SETTINGS` keys; ValueError naming `where` for unknown keys or bad values."""
        if not isinstance(values, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(values).__name__}")
        unknown = sorted(set(values) - set(SETTINGS))
        if unknown:
            raise ValueError(f"{where}: unknown settings {unknown}; known: {list(SETTINGS)}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """The settings that are set (None left out), the grid as a [rows, cols] list."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if "grid" in out:
            out["grid"] = list(out["grid"])
        return out

    @classmethod
    def load(cls, folder: str | Path) -> Asking | None:
        """FOLDER/text4seg.json, or None when the folder has none; ValueError naming the file if it is bad."""
        path = Path(folder) / SETTINGS_FILE
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable settings file ({err})") from err
        return cls.from_dict(saved, str(path))

    def save(self, folder: str | Path) -> Path:
        """Write FOLDER/text4seg.json (the folder is made if needed)."""
        path = Path(folder) / SETTINGS_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    # -- from training records -------------------------------------------------------------------
    @classmethod
    def from_records(cls, records: Any, limit: int = 2000) -> Asking:
        """The settings a model trained on `records` (docs/RECORDS.md) must be asked with.

        Reads up to `limit` records (conversation records say nothing of descriptors and are left out): the grid when all share one (the `grid` column, else read from the
        answers' descriptors); the fixed target label when every referring record labels its target
        with the same word and that word is not the expression (`build --target-label`); the answer
        form: "none" when no answer has a sentence before `<seg>`, "free" when some referring answer's
        sentence is not one the templates write, else left to the default ("templates").
        """
        rows = [r for r in _rows(records, limit) if r.get("messages") and r.get("task") != "conversation"]
        answers = [answer_text(r) for r in rows]
        grids = {
            tuple(r["grid"]) if r.get("grid") else _answer_grid(a) for r, a in zip(rows, answers, strict=True)
        }
        grids.discard(None)
        refer = [r for r in rows if r.get("task") == "refer" and len(r.get("labels") or ()) == 2]
        fixed = {r["labels"][1] for r in refer}
        target = (
            fixed.pop()
            if len(fixed) == 1 and any(r["labels"][1] != r.get("expression") for r in refer)
            else None
        )
        return cls(
            grid=grids.pop() if len(grids) == 1 else None,
            target_label=target,
            answer_sentences=_answer_form(rows, answers),
        )


SETTINGS = tuple(f.name for f in fields(Asking))
"""The keys of text4seg.json."""


def _grid(value: Any) -> tuple[int, int]:
    rows, cols = (value, value) if isinstance(value, int) else tuple(value)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1024 for v in (rows, cols)):
        raise ValueError(f"grid must be an int or [rows, cols] of ints in 1..1024, got {value!r}")
    return rows, cols


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value is not None and value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")


def _rows(records: Any, limit: int) -> list[dict[str, Any]]:
    names = getattr(records, "column_names", None)
    if names is None:
        return [dict(r) for r in list(records)[:limit]]
    columns = [c for c in ("grid", "task", "labels", "expression", "messages") if c in names]
    part = records.select_columns(columns)
    return [dict(r) for r in part.select(range(min(limit, len(part))))]


def _answer_grid(answer: str) -> tuple[int, int] | None:
    """(rows, cols) of the answer's first descriptor, when it parses strictly; else None."""
    segments = extract_segments(answer)
    return descriptor_grid_size(segments[0]) if segments else None


def _answer_form(rows: list[dict[str, Any]], answers: list[str]) -> str | None:
    if not answers:
        return None
    if all(a.startswith(TEXT4SEG.open_tag) for a in answers):
        return "none"
    for row, answer in zip(rows, answers, strict=True):
        sentence = answer.split(TEXT4SEG.open_tag, 1)[0].strip()
        if row.get("task") == "refer" and sentence:
            if sentence not in refer_answer_sentences(str(row.get("expression", ""))):
                return "free"
    return None


# -- the same settings as dicts ---------------------------------------------------------------------
def load_settings(path_or_id: str | Path) -> dict[str, Any]:
    """The settings saved in a folder's text4seg.json as keyword arguments (empty when there is none)."""
    asking = Asking.load(path_or_id)
    if asking is None:
        return {}
    settings = asking.to_dict()
    if "grid" in settings:
        settings["grid"] = tuple(settings["grid"])
    return settings


def settings_from_records(records: Any, limit: int = 2000) -> dict[str, Any]:
    """`Asking.from_records(...)` as a dict (the grid as a list)."""
    return Asking.from_records(records, limit).to_dict()


def write_settings(folder: str | Path, settings: dict[str, Any]) -> Path:
    """Write `settings` (keys of `SETTINGS`) to FOLDER/text4seg.json."""
    return Asking.from_dict(dict(settings)).save(folder)
