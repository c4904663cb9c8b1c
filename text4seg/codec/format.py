"""The descriptor format: grid size, background label, separators and answer tags."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

GridSize = tuple[int, int]

MAX_GRID_SIDE = 1024
"""The most rows or columns a grid may have. Descriptors use 16 to 32 cells a side; the bound keeps text
that claims a huge grid (`others *999999| …`) from allocating without limit: a format cannot be made
larger, strict decoding and `descriptor_grid_size(strict=True)` raise `DescriptorParseError` on text
wider or taller, and lenient decoding never allocates more than its format's grid."""


def as_grid_size(grid: int | tuple[int, int] | list[int]) -> GridSize:
    """Normalise a grid given as `g` or `(rows, cols)` to `(rows, cols)`, refusing sizes outside
    1..`MAX_GRID_SIDE`."""
    if isinstance(grid, int):
        rows = cols = grid
    else:
        rows, cols = (int(v) for v in grid)
    if rows < 1 or cols < 1:
        raise ValueError(f"grid size must be positive, got {grid!r}")
    if rows > MAX_GRID_SIDE or cols > MAX_GRID_SIDE:
        raise ValueError(f"grid size {rows}×{cols} exceeds MAX_GRID_SIDE = {MAX_GRID_SIDE}")
    return rows, cols


@dataclass(frozen=True)
class DescriptorFormat:
    """How a label grid is written as text.

    A row is a list of runs `{label}{count_sep}{count}` joined by `run_sep`; rows are joined by
    `row_sep` and the whole text ends with `end`. In a model answer the text sits between
    `open_tag` and `close_tag`. `TEXT4SEG` is the layout of the Text4Seg paper's released data.
    """

    grid: GridSize = (16, 16)
    background: str = "others"
    count_sep: str = " *"
    run_sep: str = "| "
    row_sep: str = "\n "
    end: str = "\n"
    open_tag: str = "<seg>"
    close_tag: str = "</seg>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", as_grid_size(self.grid))
        for name in ("count_sep", "run_sep", "row_sep", "open_tag", "close_tag"):
            if not getattr(self, name):
                raise ValueError(f"DescriptorFormat.{name} must not be empty")
        check_label(self.background, self)

    @property
    def rows(self) -> int:
        return self.grid[0]

    @property
    def cols(self) -> int:
        return self.grid[1]

    def with_grid(self, grid: int | tuple[int, int]) -> DescriptorFormat:
        """A copy of this format with another grid size."""
        return replace(self, grid=as_grid_size(grid))

    def forbidden_in_labels(self) -> tuple[str, ...]:
        """Substrings a label may not contain, or the text would be ambiguous."""
        parts = {self.count_sep, self.run_sep, self.row_sep, self.open_tag, self.close_tag, "\n", "\r"}
        if self.end.strip(" "):
            parts.add(self.end)
        return tuple(sorted(parts))


class LabelError(ValueError):
    """A label that cannot be written in the descriptor format."""


@lru_cache(maxsize=64)
def forbidden_parts(fmt: DescriptorFormat) -> tuple[str, ...]:
    """`DescriptorFormat.forbidden_in_labels`, computed once per format."""
    return fmt.forbidden_in_labels()


def check_label(label: str, fmt: DescriptorFormat) -> str:
    """Return `label` if it can be written unambiguously in `fmt`, else raise `LabelError` saying why."""
    return check_label_against(label, forbidden_parts(fmt))


def check_label_against(label: str, forbidden: tuple[str, ...]) -> str:
    """`check_label` with the format's `DescriptorFormat.forbidden_in_labels` given (for a caller checking
    many labels of one format)."""
    if not isinstance(label, str):
        raise LabelError(f"label must be a string, got {type(label).__name__}: {label!r}")
    if not label.strip():
        raise LabelError("label must not be empty or only whitespace")
    if label != label.strip():
        raise LabelError(f"label {label!r} has leading or trailing whitespace")
    for part in forbidden:
        if part in label:
            raise LabelError(f"label {label!r} contains the separator {part!r}")
    return label


TEXT4SEG = DescriptorFormat()
