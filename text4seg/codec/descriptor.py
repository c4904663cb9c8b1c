"""The public face of the codec: encode masks to descriptor text, decode answers back to grids and masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .format import TEXT4SEG, DescriptorFormat, check_label
from .grid import DownMethod, UpMethod, as_image_size, grid_to_mask, label_map_to_grid, mask_to_grid
from .rrle import DescriptorParseError, Repair, grid_to_text, parse_lenient, parse_strict


def encode_mask(
    mask: np.ndarray, label: str, fmt: DescriptorFormat = TEXT4SEG, method: DownMethod = "nearest"
) -> str:
    """H×W binary mask -> descriptor text naming the foreground `label` (no answer tags).

    An all-zero mask gives the all-background descriptor (a no-target expression); several objects
    in one mask share the one label (a multi-target expression).
    """
    check_label(label, fmt)
    if label == fmt.background:
        raise ValueError(f"the target label must differ from the background label {fmt.background!r}")
    return grid_to_text(mask_to_grid(mask, fmt.grid, method).astype(np.int32), [fmt.background, label], fmt)


def encode_label_map(
    label_map: np.ndarray,
    labels: Sequence[str],
    fmt: DescriptorFormat = TEXT4SEG,
    method: DownMethod = "nearest",
) -> str:
    """H×W label map (value v = `labels[v]`, 0 = background) -> descriptor text with a class per cell.

    Use it for semantic segmentation (class names) and instance labels (`person 1`, `person 2`).
    """
    label_map = np.asarray(label_map)
    if label_map.size and int(label_map.max()) >= len(labels):
        raise ValueError(
            f"label_map holds value {int(label_map.max())} but only {len(labels)} labels were given"
        )
    return grid_to_text(label_map_to_grid(label_map, fmt.grid, method), labels, fmt)


def format_answer(sentence: str, descriptor_text: str, fmt: DescriptorFormat = TEXT4SEG) -> str:
    """The assistant answer layout of Text4Seg's data: `{sentence}\\n<seg>{descriptor}</seg>`."""
    prefix = f"{sentence}\n" if sentence else ""
    return f"{prefix}{fmt.open_tag}{descriptor_text}{fmt.close_tag}"


def extract_segments(answer: str, fmt: DescriptorFormat = TEXT4SEG) -> list[str]:
    """Every complete `<seg>…</seg>` block in a model answer, in order (tags removed)."""
    blocks = []
    start = answer.find(fmt.open_tag)
    while start != -1:
        body_start = start + len(fmt.open_tag)
        end = answer.find(fmt.close_tag, body_start)
        if end == -1:
            break
        blocks.append(answer[body_start:end])
        start = answer.find(fmt.open_tag, end + len(fmt.close_tag))
    return blocks


@dataclass
class Descriptor:
    """A decoded descriptor: `grid` (rows×cols int32, 0 = background), `labels` (index = grid value) and
    `report`, the repairs lenient decoding made (empty when the text was well-formed)."""

    grid: np.ndarray
    labels: list[str]
    report: list[Repair] = field(default_factory=list)
    fmt: DescriptorFormat = TEXT4SEG

    @property
    def ok(self) -> bool:
        """True when the text was well-formed (nothing repaired)."""
        return not self.report

    @property
    def is_empty(self) -> bool:
        """True when every cell is background (a no-target answer)."""
        return not bool(self.grid.any())

    def to_mask(
        self, size: tuple[int, int], method: UpMethod = "bilinear", *, image: Any = None, **guided: float
    ) -> np.ndarray:
        """The grid at image size `(height, width)`: a bool mask when at most one foreground label is in
        play, else an int32 label map (values index `labels`).

        `method="guided"` needs `image`, the image the mask is for (H×W×3 array or PIL image), and
        makes outlines follow its edges; `radius`/`eps` may be given (see `grid_to_mask`).
        """
        label = 1 if len(self.labels) <= 2 else None
        return grid_to_mask(self.grid, size, method, label=label, image=image, **guided)

    def mask(
        self,
        size: tuple[int, int],
        label: str | None = None,
        method: UpMethod = "bilinear",
        *,
        image: Any = None,
        **guided: float,
    ) -> np.ndarray:
        """Bool mask at `(height, width)` of one label, or of every non-background cell when `label` is
        None (`method`, `image` as in `to_mask`)."""
        if label is None:
            grid = (self.grid != 0).astype(np.int32)
            return grid_to_mask(grid, size, method, label=1, image=image, **guided)
        if label not in self.labels:
            return np.zeros(as_image_size(size), dtype=bool)
        return grid_to_mask(self.grid, size, method, label=self.labels.index(label), image=image, **guided)

    def to_text(self) -> str:
        """Well-formed descriptor text for this grid (what the repaired text should have been)."""
        return grid_to_text(self.grid, self.labels, self.fmt)


def _seg_block(text: str, fmt: DescriptorFormat, strict: bool) -> tuple[str, int, list[Repair]]:
    """The descriptor part of `text`: the first tagged block, or the whole text when it has no tags."""
    repairs: list[Repair] = []
    start = text.find(fmt.open_tag)
    close = text.find(fmt.close_tag)
    if start == -1 and close == -1:
        return text, 0, repairs
    if start == -1:
        if strict:
            raise DescriptorParseError(f"{fmt.close_tag!r} without {fmt.open_tag!r}", offset=close)
        repairs.append(
            Repair("missing_open_tag", f"no {fmt.open_tag!r}; read the text before {fmt.close_tag!r}")
        )
        return text[:close], 0, repairs
    body_start = start + len(fmt.open_tag)
    end = text.find(fmt.close_tag, body_start)
    if end == -1:
        if strict:
            raise DescriptorParseError(f"{fmt.open_tag!r} is never closed", offset=len(text))
        repairs.append(Repair("missing_close_tag", f"no {fmt.close_tag!r}; read to the end of the text"))
        return text[body_start:], body_start, repairs
    rest = text[end + len(fmt.close_tag) :]
    if fmt.open_tag in rest:
        repairs.append(Repair("multiple_segments", "the answer has several blocks; decoded the first"))
    elif rest.strip() and not strict:
        repairs.append(Repair("text_after_close_tag", f"ignored {rest.strip()[:40]!r}"))
    return text[body_start:end], body_start, repairs


def decode(
    text: str,
    fmt: DescriptorFormat = TEXT4SEG,
    strict: bool = False,
    labels: Sequence[str] | None = None,
) -> Descriptor:
    """Decode descriptor text or a whole model answer (its first `<seg>` block) to a `Descriptor`.

    `strict=True` raises `DescriptorParseError` (row, column, character offset) on any malformation;
    `strict=False` never raises on a string, always returns a `fmt.grid`-shaped grid, and lists what
    it repaired in `report`. Pass `labels` (background first) when the label set is known: grid
    values then index that list and unknown labels are reported.
    """
    if not isinstance(text, str):
        if strict:
            raise TypeError(f"text must be a string, got {type(text).__name__}")
        text = "" if text is None else str(text)
    block, offset, repairs = _seg_block(text, fmt, strict)
    if strict:
        try:
            grid, known = parse_strict(block, fmt, labels)
        except DescriptorParseError as err:
            shifted = None if err.offset is None else err.offset + offset
            raise DescriptorParseError(err.reason, row=err.row, col=err.col, offset=shifted) from None
        return Descriptor(grid, known, [], fmt)
    grid, known, row_repairs = parse_lenient(block, fmt, labels)
    return Descriptor(grid, known, repairs + row_repairs, fmt)
