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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .format import (
    MAX_GRID_SIDE,
    TEXT4SEG,
    DescriptorFormat,
    LabelError,
    check_label,
    check_label_against,
    forbidden_parts,
)

__all__ = [
    "DescriptorParseError",
    "Repair",
    "check_labels",
    "descriptor_grid_size",
    "grid_to_cell_text",
    "grid_to_text",
    "parse_lenient",
    "parse_strict",
    "write_checked_grid",
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
    forbidden = forbidden_parts(fmt)
    for label in labels:
        check_label_against(label, forbidden)
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
    return write_checked_grid(_check_grid(grid, len(labels)), labels, fmt)


def _row_text(row: list[int], names: list[str], run_sep: str) -> str:
    runs, start = [], 0
    for j in range(1, len(row)):
        if row[j] != row[j - 1]:
            runs.append(f"{names[row[start]]}{j - start}")
            start = j
    runs.append(f"{names[row[start]]}{len(row) - start}")
    return run_sep.join(runs)


def write_checked_grid(
    grid: np.ndarray, labels: Sequence[str], fmt: DescriptorFormat, rows_seen: dict | None = None
) -> str:
    """`grid_to_text` without its checks, for a caller whose grid and labels passed them already (a 2-D
    integer grid with values in ``[0, len(labels))``, labels accepted by `check_labels`); unchecked
    input gives wrong text, not an error. ``rows_seen`` (row values -> row text) may be kept by the
    caller across calls with the same labels and format: each distinct row is written once."""
    names = [f"{label}{fmt.count_sep}" for label in labels]
    seen: dict = {} if rows_seen is None else rows_seen
    rows = []
    for row in grid.tolist():
        key = tuple(row)
        text = seen.get(key)
        if text is None:
            text = seen[key] = _row_text(row, names, fmt.run_sep)
        rows.append(text)
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


def _short(text: str, n: int = 40) -> str:
    """`text` cut to `n` characters for messages (hostile text can be megabytes long)."""
    return text if len(text) <= n else text[:n] + "…"


def _check_run_label(label: str, fmt: DescriptorFormat, r: int, col: int, offset: int) -> None:
    """Refuse a label `grid_to_text` could not have written (prose with a newline, a separator, …)."""
    try:
        check_label(label, fmt)
    except LabelError:
        raise DescriptorParseError(f"bad label {_short(label)!r}", row=r, col=col, offset=offset) from None


def _strict_runs(
    row_text: str,
    fmt: DescriptorFormat,
    cols: int,
    r: int,
    offset: int,
    seen: dict[str, int],
    exact: bool = True,
) -> Iterator[tuple[str, int, int, int]]:
    """Yield `(label, col, count, run offset)` for each run of a well-formed row of `cols` cells (at most
    `cols` when not `exact`); raise `DescriptorParseError` at the first problem. `offset` is the row's
    character offset; labels in `seen` are known to be well-formed."""
    end, col = offset + len(row_text), 0
    for run in row_text.split(fmt.run_sep):
        label, sep, count_text = run.rpartition(fmt.count_sep)
        if not sep:
            raise DescriptorParseError(
                f"run {_short(run)!r} has no {fmt.count_sep!r}", row=r, col=col, offset=offset
            )
        if label not in seen:
            _check_run_label(label, fmt, r, col, offset)
        count_at = offset + len(label) + len(sep)
        if not (count_text.isascii() and count_text.isdigit()) or count_text.startswith("0"):
            raise DescriptorParseError(f"bad count {_short(count_text)!r}", row=r, col=col, offset=count_at)
        # compare digit counts before int(): Python refuses to convert a string of 4,301+ digits
        if len(count_text) > len(str(cols)) or col + int(count_text) > cols:
            raise DescriptorParseError(f"row has more than {cols} cells", row=r, col=col, offset=count_at)
        yield label, col, int(count_text), offset
        col += int(count_text)
        offset += len(run) + len(fmt.run_sep)
    if exact and col != cols:
        raise DescriptorParseError(f"row has {col} cells, expected {cols}", row=r, col=col, offset=end)


def parse_strict(
    text: str, fmt: DescriptorFormat = TEXT4SEG, labels: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Parse well-formed descriptor text (no tags) into `(grid, labels)`, or raise `DescriptorParseError`.

    Without `labels`, the background maps to 0 and other labels to 1, 2, … by first appearance; with
    `labels`, every label in the text must be one of them and grid values index that list. A label
    that `grid_to_text` would refuse (one holding a newline, a separator or a tag) is an error, so
    prose before the first row is never read as a label.
    """
    rows_n, cols_n = fmt.grid
    known = list(labels) if labels is not None else [fmt.background]
    if known[0] != fmt.background:
        raise ValueError(f"labels[0] must be the background label {fmt.background!r}")
    index = {lab: i for i, lab in enumerate(known)}
    if not text.endswith(fmt.end):
        raise DescriptorParseError(f"text must end with {fmt.end!r}", row=None, offset=len(text))
    body = text[: len(text) - len(fmt.end)] if fmt.end else text
    found = body.count(fmt.row_sep) + 1
    if found != rows_n:
        raise DescriptorParseError(f"expected {rows_n} rows, found {found}", offset=len(body))
    grid = np.zeros((rows_n, cols_n), dtype=np.int32)
    offset = 0
    for r, row_text in enumerate(body.split(fmt.row_sep)):
        for label, col, count, at in _strict_runs(row_text, fmt, cols_n, r, offset, index):
            value = _label_index(known, index, label, fixed=labels is not None)
            if value is None:
                raise DescriptorParseError(f"unknown label {_short(label)!r}", row=r, col=col, offset=at)
            grid[r, col : col + count] = value
        offset += len(row_text) + len(fmt.row_sep)
    return grid, known


_DIGITS = re.compile(r"\d+")
_MAX_COUNT_DIGITS = 6  # a longer count cannot fit any grid (MAX_GRID_SIDE has 4 digits)


def _read_count(digits: str, cols: int) -> int:
    """A run count; one too long to fit a row reads as `cols + 1` (cut by the row, reported as row_cut)."""
    return int(digits) if len(digits) <= _MAX_COUNT_DIGITS else cols + 1


def _split_fuzzy_run(piece: str, mark: str) -> tuple[str, str] | None:
    """`(label, count text)` of a stripped run around its count mark, or None when it has none.

    Picks the first mark followed only by whitespace and one word, as the regex
    `^(.*?)\\s*MARK\\s*(\\S*)\\s*$` would, in linear time: that regex backtracks quadratically over a
    long stretch of spaces (64k spaces took 5.7 s).
    """
    parts = piece.rsplit(None, 1)  # [text before the last word, stripped at its end; last word]
    token = parts[-1]
    if len(parts) == 2 and parts[0].endswith(mark):
        return parts[0][: len(parts[0]) - len(mark)], token
    at = token.find(mark)
    if at == -1:
        return None
    return piece[: len(piece) - len(token) + at], token[at + len(mark) :]


def _fuzzy_runs(row_text: str, fmt: DescriptorFormat) -> list[tuple[str, int | None]]:
    """Split a malformed row into (label, count or None) pairs, as best it can."""
    sep = fmt.run_sep.strip() or fmt.run_sep
    mark = fmt.count_sep.strip() or fmt.count_sep
    runs: list[tuple[str, int | None]] = []
    for piece in row_text.split(sep):
        piece = piece.strip()
        if not piece:
            continue
        split = _split_fuzzy_run(piece, mark)
        if split is None:
            runs.append((piece, None))
            continue
        digits = _DIGITS.match(split[1])
        runs.append((split[0].strip(), _read_count(digits.group(), fmt.cols) if digits else None))
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
        # difflib's ratio is at most 2 * shorter / (sum of lengths): a label over twice as long as every
        # known label cannot reach 0.75, so skip difflib's work on it (hostile labels can be megabytes)
        longest = max(len(k) for k in self.known)
        close = (
            difflib.get_close_matches(label, self.known, n=1, cutoff=0.75)
            if len(label) <= 2 * longest
            else []
        )
        value = self.index[close[0]] if close else 0
        self.repairs.append(Repair("unknown_label", f"{_short(label)!r} read as {self.known[value]!r}", r))
        return value

    def cells(self, runs: list[tuple[str, int | None]], r: int) -> np.ndarray:
        cols = self.fmt.cols
        values = [self.resolve_label(label, r) for label, _ in runs]
        counts = [c for _, c in runs]
        missing = [i for i, c in enumerate(counts) if c is None]
        for i, c in enumerate(counts):
            if c == 0:
                self.repairs.append(
                    Repair("bad_count", f"zero-length run of {_short(runs[i][0])!r} dropped", r)
                )
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
    empty = [i for i, line in enumerate(lines) if not line]
    if empty:
        repairs.append(Repair("empty_row", f"dropped {len(empty)} empty line(s)"))
        lines = [line for line in lines if line]
    first = next((i for i, line in enumerate(lines) if _looks_like_row(line, fmt)), len(lines))
    if first:
        what = repr(_short(lines[0])) if first == 1 else f"{first} lines from {_short(lines[0])!r} on"
        where = "before the first row" if first < len(lines) else "(no row found)"
        repairs.append(Repair("text_before", f"dropped {what} {where}"))
        lines = lines[first:]
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


def _looks_like_row(line: str, fmt: DescriptorFormat) -> bool:
    """True when a line has run syntax (lines before the first such line, e.g. an answer sentence in
    untagged text, are not rows): a run separator, a count mark before a digit (` *3`, `*  3`) or
    a count mark at its end (a row whose count was lost). Linear in the line's length."""
    if (fmt.run_sep.strip() or fmt.run_sep) in line:
        return True
    mark, compact = "".join(fmt.count_sep.split()), "".join(line.split())
    if not mark:
        return any(ch.isdigit() for ch in compact)
    return compact.endswith(mark) or re.search(re.escape(mark) + r"\d", compact) is not None


def _compact(grid: np.ndarray, known: list[str]) -> tuple[np.ndarray, list[str]]:
    """Drop labels that no cell kept (e.g. from cut rows), renumbering by first appearance."""
    present = [0] + [v for v in dict.fromkeys(grid.ravel().tolist()) if v != 0]
    if len(present) == len(known):
        return grid, known
    remap = np.zeros(len(known), dtype=np.int32)
    remap[present] = np.arange(len(present), dtype=np.int32)
    return remap[grid], [known[v] for v in present]


def descriptor_grid_size(
    text: str, fmt: DescriptorFormat = TEXT4SEG, strict: bool = False
) -> tuple[int, int] | None:
    """`(rows, cols)` of bare descriptor text written exactly in `fmt`'s layout, whatever grid size it
    was written for (`fmt.grid` is ignored).

    The size is computed from the separators and the first row's counts before anything is allocated;
    a text claiming more than `MAX_GRID_SIDE` rows or columns is refused. Returns None when the text is
    not such a descriptor, or with `strict=True` raises `DescriptorParseError` saying where it fails.
    """
    try:
        return _text_grid_size(text, fmt)
    except DescriptorParseError:
        if strict:
            raise
        return None


def _text_grid_size(text: str, fmt: DescriptorFormat) -> tuple[int, int]:
    if not isinstance(text, str) or not text.endswith(fmt.end):
        raise DescriptorParseError(f"text must end with {fmt.end!r}", offset=len(text or ""))
    body = text[: len(text) - len(fmt.end)] if fmt.end else text
    rows = body.count(fmt.row_sep) + 1
    if rows > MAX_GRID_SIDE:
        at = -1
        for _ in range(MAX_GRID_SIDE):
            at = body.find(fmt.row_sep, at + 1)
        raise DescriptorParseError(
            f"more than MAX_GRID_SIDE = {MAX_GRID_SIDE} rows", row=MAX_GRID_SIDE, offset=at + len(fmt.row_sep)
        )
    first = body.split(fmt.row_sep, 1)[0]
    known = {fmt.background: 0}
    try:
        cols = sum(count for _, _, count, _ in _strict_runs(first, fmt, MAX_GRID_SIDE, 0, 0, known, False))
    except DescriptorParseError as err:
        if not err.reason.startswith("row has more than"):
            raise
        reason = f"row wider than MAX_GRID_SIDE = {MAX_GRID_SIDE} cells"
        raise DescriptorParseError(reason, row=0, col=err.col, offset=err.offset) from None
    parse_strict(text, fmt.with_grid((rows, cols)))
    return rows, cols


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
