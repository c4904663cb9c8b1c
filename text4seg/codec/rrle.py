"""Label grid <-> descriptor text: R-RLE, the row-wise run-length text codec (not COCO mask RLE).

Writing is exact. Reading comes in two modes:

* strict (`parse_strict`) accepts only well-formed text and raises `DescriptorParseError` with the
  row, cell column and character offset of the first problem;
* lenient (`parse_lenient`) never raises: it repairs each row on its own (so one short row does not
  shift the rows below it) and returns the grid with a list of `Repair`s saying what it changed.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .format import TEXT4SEG, DescriptorFormat, check_label

__all__ = [
    "DescriptorParseError",
    "Repair",
    "check_labels",
    "descriptor_grid_size",
    "grid_to_cell_text",
    "grid_to_text",
    "parse_lenient",
    "parse_strict",
]


class DescriptorParseError(ValueError):
    """Malformed descriptor text, found by strict decoding.

    `row` is the 0-based grid row, `col` the 0-based cell column where the offending run starts and
    `offset` the character offset into the text given to the parser (None where not applicable).
    """

    def __init__(
        self, message: str, *, row: int | None = None, col: int | None = None, offset: int | None = None
    ):
        where = ", ".join(
            f"{k} {v}" for k, v in (("row", row), ("col", col), ("offset", offset)) if v is not None
        )
        super().__init__(f"{message} ({where})" if where else message)
        self.reason = message
        self.row = row
        self.col = col
        self.offset = offset


@dataclass(frozen=True)
class Repair:
    """One change lenient decoding made to malformed text. `row` is None for whole-text repairs."""

    kind: str
    detail: str
    row: int | None = None

    def __str__(self) -> str:
        return (
            f"row {self.row}: {self.kind}: {self.detail}"
            if self.row is not None
            else f"{self.kind}: {self.detail}"
        )


def check_labels(labels: Sequence[str], fmt: DescriptorFormat) -> list[str]:
    """Validate a label list for writing: background first, every label writable, no duplicates."""
    labels = list(labels)
    if not labels:
        raise ValueError("labels must not be empty: labels[0] names the background")
    if labels[0] != fmt.background:
        raise ValueError(f"labels[0] must be the background label {fmt.background!r}, got {labels[0]!r}")
    for label in labels:
        check_label(label, fmt)
    if len(set(labels)) != len(labels):
        dupes = sorted({lab for lab in labels if labels.count(lab) > 1})
        raise ValueError(f"duplicate labels: {dupes}")
    return labels


def _check_grid(grid: np.ndarray, n_labels: int) -> np.ndarray:
    grid = np.asarray(grid)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"grid must be a non-empty 2-D array, got shape {grid.shape}")
    if grid.dtype == bool:
        grid = grid.astype(np.int32)
    if not np.issubdtype(grid.dtype, np.integer):
        raise ValueError(f"grid must hold integers, got dtype {grid.dtype}")
    if grid.min() < 0 or grid.max() >= n_labels:
        raise ValueError(f"grid values must lie in [0, {n_labels}) to index the {n_labels} labels")
    return grid


def grid_to_text(grid: np.ndarray, labels: Sequence[str], fmt: DescriptorFormat = TEXT4SEG) -> str:
    """Write a label grid as R-RLE descriptor text (no answer tags); `labels[v]` names grid value v."""
    labels = check_labels(labels, fmt)
    grid = _check_grid(grid, len(labels))
    names = [f"{label}{fmt.count_sep}" for label in labels]
    rows = []
    for row in grid.tolist():
        runs, start = [], 0
        for j in range(1, len(row)):
            if row[j] != row[j - 1]:
                runs.append(f"{names[row[start]]}{j - start}")
                start = j
        runs.append(f"{names[row[start]]}{len(row) - start}")
        rows.append(fmt.run_sep.join(runs))
    return fmt.row_sep.join(rows) + fmt.end


def grid_to_cell_text(grid: np.ndarray, labels: Sequence[str], fmt: DescriptorFormat = TEXT4SEG) -> str:
    """Write a grid uncompressed, one label per cell (the paper's baseline, for length comparisons)."""
    labels = check_labels(labels, fmt)
    grid = _check_grid(grid, len(labels))
    return fmt.row_sep.join(fmt.run_sep.join(labels[v] for v in row) for row in grid) + fmt.end


def _label_index(labels: list[str], index: dict[str, int], label: str, fixed: bool) -> int | None:
    if label in index:
        return index[label]
    if fixed:
        return None
    index[label] = len(labels)
    labels.append(label)
    return index[label]


def parse_strict(
    text: str, fmt: DescriptorFormat = TEXT4SEG, labels: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Parse well-formed descriptor text (no tags) into `(grid, labels)`, or raise `DescriptorParseError`.

    Without `labels`, the background maps to 0 and other labels to 1, 2, … by first appearance; with
    `labels`, every label in the text must be one of them and grid values index that list.
    """
    rows_n, cols_n = fmt.grid
    known = list(labels) if labels is not None else [fmt.background]
    if known[0] != fmt.background:
        raise ValueError(f"labels[0] must be the background label {fmt.background!r}")
    index = {lab: i for i, lab in enumerate(known)}
    if not text.endswith(fmt.end):
        raise DescriptorParseError(f"text must end with {fmt.end!r}", row=None, offset=len(text))
    body = text[: len(text) - len(fmt.end)] if fmt.end else text
    grid = np.zeros((rows_n, cols_n), dtype=np.int32)
    offset = 0
    row_texts = body.split(fmt.row_sep)
    if len(row_texts) != rows_n:
        raise DescriptorParseError(f"expected {rows_n} rows, found {len(row_texts)}", offset=len(body))
    for r, row_text in enumerate(row_texts):
        col = 0
        run_offset = offset
        for run in row_text.split(fmt.run_sep):
            label, sep, count_text = run.rpartition(fmt.count_sep)
            if not sep:
                raise DescriptorParseError(
                    f"run {run!r} has no {fmt.count_sep!r}", row=r, col=col, offset=run_offset
                )
            if not label or label != label.strip():
                raise DescriptorParseError(f"bad label {label!r}", row=r, col=col, offset=run_offset)
            if not (count_text.isascii() and count_text.isdigit()) or count_text.startswith("0"):
                raise DescriptorParseError(
                    f"bad count {count_text!r}", row=r, col=col, offset=run_offset + len(label) + len(sep)
                )
            count = int(count_text)
            value = _label_index(known, index, label, fixed=labels is not None)
            if value is None:
                raise DescriptorParseError(f"unknown label {label!r}", row=r, col=col, offset=run_offset)
            if col + count > cols_n:
                raise DescriptorParseError(
                    f"row has more than {cols_n} cells",
                    row=r,
                    col=col,
                    offset=run_offset + len(label) + len(sep),
                )
            grid[r, col : col + count] = value
            col += count
            run_offset += len(run) + len(fmt.run_sep)
        if col != cols_n:
            raise DescriptorParseError(
                f"row has {col} cells, expected {cols_n}", row=r, col=col, offset=offset + len(row_text)
            )
        offset += len(row_text) + len(fmt.row_sep)
    return grid, known


_FUZZY_RUN = re.compile(r"^(?P<label>.*?)\s*\*\s*(?P<count>\S*)\s*$", re.DOTALL)


def _fuzzy_runs(row_text: str, fmt: DescriptorFormat) -> list[tuple[str, int | None]]:
    """Split a malformed row into (label, count or None) pairs, as best it can."""
    sep = fmt.run_sep.strip() or fmt.run_sep
    runs: list[tuple[str, int | None]] = []
    for piece in row_text.split(sep):
        piece = piece.strip()
        if not piece:
            continue
        match = _FUZZY_RUN.match(piece)
        if match is None:
            runs.append((piece, None))
            continue
        label, count_text = match.group("label").strip(), match.group("count")
        digits = re.match(r"\d+", count_text)
        count = int(digits.group()) if digits and len(digits.group()) < 7 else None
        runs.append((label, count))
    return runs


class _LenientRow:
    """Resolves one row's runs to exactly `cols` cells, recording repairs."""

    def __init__(self, fmt: DescriptorFormat, known: list[str], index: dict[str, int], fixed: bool):
        self.fmt, self.known, self.index, self.fixed = fmt, known, index, fixed
        self.repairs: list[Repair] = []

    def resolve_label(self, label: str, r: int) -> int:
        if not label:
            self.repairs.append(Repair("missing_label", "run with no label read as background", r))
            return 0
        value = _label_index(self.known, self.index, label, self.fixed)
        if value is not None:
            return value
        close = difflib.get_close_matches(label, self.known, n=1, cutoff=0.75)
        value = self.index[close[0]] if close else 0
        self.repairs.append(Repair("unknown_label", f"{label!r} read as {self.known[value]!r}", r))
        return value

    def cells(self, runs: list[tuple[str, int | None]], r: int) -> np.ndarray:
        cols = self.fmt.cols
        values = [self.resolve_label(label, r) for label, _ in runs]
        counts = [c for _, c in runs]
        missing = [i for i, c in enumerate(counts) if c is None]
        for i, c in enumerate(counts):
            if c == 0:
                self.repairs.append(Repair("bad_count", f"zero-length run of {runs[i][0]!r} dropped", r))
        if missing:
            left = max(cols - sum(c for c in counts if c), 0)
            share = max(left // len(missing), 1)
            for i in missing:
                counts[i] = share
            self.repairs.append(
                Repair("bad_count", f"{len(missing)} run(s) without a count given {share} cell(s)", r)
            )
        total = sum(counts)
        if total == 0:
            self.repairs.append(Repair("row_padded", f"empty row filled with {self.fmt.background!r}", r))
            return np.zeros(cols, dtype=np.int32)
        if total > cols:
            self.repairs.append(Repair("row_cut", f"{total} cells, cut to {cols}", r))
            kept = np.minimum(np.cumsum(counts), cols)
            counts = np.diff(kept, prepend=0).tolist()
        row = np.repeat(np.asarray(values, dtype=np.int32), np.asarray(counts, dtype=np.int64))
        if row.size < cols:
            self.repairs.append(
                Repair("row_padded", f"{row.size} cells, padded to {cols} with {self.known[row[-1]]!r}", r)
            )
            row = np.concatenate([row, np.full(cols - row.size, row[-1], dtype=np.int32)])
        return row


def parse_lenient(
    text: str, fmt: DescriptorFormat = TEXT4SEG, labels: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str], list[Repair]]:
    """Parse any string into a `fmt.grid`-shaped grid; never raises on text input.

    Returns `(grid, labels, repairs)`; `repairs` is empty exactly when strict parsing succeeds with the
    same result. Rows are repaired one by one: a short row is padded with its last label, a long row
    cut, a run without a usable count shares the row's remaining cells, an unknown label (when
    `labels` is given) becomes the closest known label or the background. Missing rows at the end
    become background (no foreground is invented); extra rows are dropped.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    try:
        grid, known = parse_strict(text, fmt, labels)
        return grid, known, []
    except DescriptorParseError:
        pass
    rows_n, cols_n = fmt.grid
    known = list(labels) if labels is not None else [fmt.background]
    if not known or known[0] != fmt.background:
        known = [fmt.background] + [lab for lab in known if lab != fmt.background]
    index = {lab: i for i, lab in enumerate(known)}
    repairs: list[Repair] = []
    body = text.replace("\r\n", "\n").replace("\r", "\n")
    if fmt.end and body.endswith(fmt.end):
        body = body[: len(body) - len(fmt.end)]
    elif fmt.end:
        repairs.append(Repair("missing_end", f"text does not end with {fmt.end!r}"))
    row_sep = fmt.row_sep.strip(" ") or fmt.row_sep
    lines = [line.strip() for line in body.split(row_sep)]
    count_mark = fmt.count_sep.strip() or fmt.count_sep
    while lines and count_mark not in lines[0] and len(lines) > 1:
        repairs.append(Repair("text_before", f"dropped {lines[0][:40]!r} before the first row"))
        lines.pop(0)
    empty = [i for i, line in enumerate(lines) if not line]
    if empty:
        repairs.append(Repair("empty_row", f"dropped {len(empty)} empty line(s)"))
        lines = [line for line in lines if line]
    grid = np.zeros((rows_n, cols_n), dtype=np.int32)
    row_parser = _LenientRow(fmt, known, index, fixed=labels is not None)
    for r, line in enumerate(lines[:rows_n]):
        strict_runs = _strict_row(line, fmt)
        runs = strict_runs if strict_runs is not None else _fuzzy_runs(line, fmt)
        grid[r] = row_parser.cells(runs, r)
    repairs.extend(row_parser.repairs)
    if len(lines) < rows_n:
        repairs.append(
            Repair("rows_padded", f"{len(lines)} rows, {rows_n - len(lines)} background row(s) added")
        )
    elif len(lines) > rows_n:
        repairs.append(Repair("rows_cut", f"{len(lines)} rows, cut to {rows_n}"))
    if not repairs:
        repairs.append(Repair("separators", "separators or spacing differ from the format"))
    if labels is None:
        grid, known = _compact(grid, known)
    return grid, known, repairs


def _compact(grid: np.ndarray, known: list[str]) -> tuple[np.ndarray, list[str]]:
    """Drop labels that no cell kept (e.g. from cut rows), renumbering by first appearance."""
    present = [0] + [v for v in dict.fromkeys(grid.ravel().tolist()) if v != 0]
    if len(present) == len(known):
        return grid, known
    remap = np.zeros(len(known), dtype=np.int32)
    remap[present] = np.arange(len(present), dtype=np.int32)
    return remap[grid], [known[v] for v in present]


def descriptor_grid_size(text: str, fmt: DescriptorFormat = TEXT4SEG) -> tuple[int, int] | None:
    """`(rows, cols)` of bare descriptor text written exactly in `fmt`'s layout, whatever grid size it
    was written for (`fmt.grid` is ignored); None when the text is not such a descriptor."""
    body = text[: -len(fmt.end)] if fmt.end and text.endswith(fmt.end) else text
    lines = body.split(fmt.row_sep)
    runs = _strict_row(lines[0], fmt)
    if not runs:
        return None
    size = (len(lines), sum(count or 0 for _, count in runs))
    if not size[1]:
        return None
    try:
        parse_strict(text, fmt.with_grid(size))
    except DescriptorParseError:
        return None
    return size


def _strict_row(line: str, fmt: DescriptorFormat) -> list[tuple[str, int | None]] | None:
    """The runs of a row written exactly in the format, or None when it is not."""
    runs: list[tuple[str, int | None]] = []
    for run in line.split(fmt.run_sep):
        label, sep, count_text = run.rpartition(fmt.count_sep)
        if (
            not sep
            or not label
            or not count_text.isdigit()
            or not count_text.isascii()
            or len(count_text) > 6
        ):
            return None
        runs.append((label, int(count_text)))
    return runs
