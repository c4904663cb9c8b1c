"""What the loaders hand to the record builder: images, annotations and one spec per record.

Loaders (`coco`, `refer`) only read and check annotation files; they decode no mask. A
`RecordSpec` says which annotations go under which label; `records` decodes each annotation once
per image and writes the records. A deferred loader (``refer``'s, as a build uses it) leaves each
image's checks and specs to the process that makes its records (`PendingImage`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .issues import Issue


@dataclass(frozen=True)
class ImageInfo:
    """One image entry of an instances file: id, ``file_name`` as written there, size in pixels."""

    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class RecordSpec:
    """One record to build.

    ``targets`` names the labels for grid values 1, 2, … (the background label comes from the
    descriptor format); ``target_anns[k]`` lists the annotations merged under ``targets[k]``
    (empty for a no-target expression or a class absent from the image). ``variant`` picks the
    template family (``semantic``: ``all``/``subset``/``absent``; ``refer``: ``category`` for COCO
    categories, ``expression`` for referring sentences).
    """

    id: str
    task: str
    dataset: str
    split: str
    image_id: int
    expression: str
    targets: tuple[str, ...]
    target_anns: tuple[tuple[int, ...], ...]
    variant: str = ""
    ref_id: int = -1
    sent_id: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ann_ids", [a for anns in self.target_anns for a in anns])

    @property
    def ann_ids(self) -> list[int]:
        """Every annotation of the record, in target order (computed once: do not change the list)."""
        return self._ann_ids  # type: ignore[attr-defined]


class PendingImage(Protocol):
    """An image whose annotation checks and record specs a loader left to the process that makes its
    records (so that they are spread over a build's workers)."""

    image: ImageInfo

    def plan(self) -> tuple[dict[int, dict], list[RecordSpec], list[Issue]]:
        """(the annotations the specs need, by id; the image's specs; the issues met, in order)."""
        ...


@dataclass
class Source:
    """Everything a loader read: images, usable annotations, record specs and the issues met; or, for
    a deferred loader, ``pending`` images (in image id order) whose annotations and specs are checked
    and made where their records are (``annotations`` and ``specs`` then stay empty)."""

    dataset: str
    ann_file: Path
    image_root: Path
    images: dict[int, ImageInfo]
    annotations: dict[int, dict]
    specs: list[RecordSpec]
    issues: list[Issue] = field(default_factory=list)
    input_files: list[Path] = field(default_factory=list)
    pending: list[PendingImage] = field(default_factory=list)
