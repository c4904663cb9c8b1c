"""How records are built (`BuildConfig`) and what a build returns (`BuildResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from text4seg.codec import TEXT4SEG, DescriptorFormat, check_labels
from text4seg.codec.grid import DOWN_METHODS

if TYPE_CHECKING:
    from datasets import DatasetDict


IMAGE_STORES = ("embed", "paths", "folder")
"""Where a build puts the images: embedded in every record, absolute paths, or once in its own folder."""

DEFAULT_IMAGE_STORE = "folder"
"""Each image stored once inside the build folder (the records reference it by a relative path)."""

IMAGES_FOLDER = "images"
"""The folder, inside a build made with ``image_store="folder"``, that holds each image once."""


@dataclass(frozen=True)
class BuildConfig:
    """How records are made. ``grid`` and ``method`` set the descriptor.

    ``image_store`` says where the images go (`IMAGE_STORES`):

    * ``"folder"`` (default): each image is stored once, in ``images/`` inside the build folder, and
      records hold its path relative to the build folder (``"images/<file_name>"``); the folder can be
      moved or copied whole. Load such records with `text4seg.data.load_records`, which resolves the
      paths. The image is a hard link to the source file where the file system allows it (no second
      copy on disk), else a copy; ``copy_images=True`` always copies;
    * ``"embed"``: ``images`` holds `datasets.Image` values, which ``save_to_disk`` embeds; the saved
      records are self-contained, but every record carries its image's bytes (an image with seven
      sentences is stored seven times);
    * ``"paths"``: absolute path strings to the files under the image folder (nothing copied; the
      records break when the images move). ``image_paths=True`` is the older spelling of this (when
      ``image_store`` is not given).

    After construction ``image_store`` is always set and ``image_paths`` says whether the records hold
    path strings (every store but ``"embed"``).

    ``target_label`` names the referred cells of ``refer`` records: ``None`` (default) writes the
    expression itself, as Text4Seg's data does; a fixed word (e.g. ``"target"``) keeps every answer
    short and spelled the same whatever the expression (the segmenter must then be given the same
    ``target_label``).
    """

    grid: int | tuple[int, int] = 16
    method: str = "nearest"
    seed: int = 0
    num_proc: int = 1
    strict: bool = False
    image_paths: bool = False
    progress: bool = True
    target_label: str | None = None
    image_store: str | None = None
    copy_images: bool = False

    def __post_init__(self) -> None:
        store = self.image_store or ("paths" if self.image_paths else DEFAULT_IMAGE_STORE)
        if store not in IMAGE_STORES:
            raise ValueError(f"unknown image_store {store!r}; use one of {IMAGE_STORES}")
        object.__setattr__(self, "image_store", store)
        object.__setattr__(self, "image_paths", store != "embed")
        if self.method not in DOWN_METHODS:
            raise ValueError(f"unknown downsampling method {self.method!r}; use one of {DOWN_METHODS}")
        if self.num_proc < 1:
            raise ValueError(f"num_proc must be >= 1, got {self.num_proc}")
        self.fmt  # noqa: B018  (validates the grid size now rather than in a worker)
        if self.target_label is not None:
            check_labels([self.fmt.background, self.target_label], self.fmt)

    @property
    def fmt(self) -> DescriptorFormat:
        return TEXT4SEG.with_grid(self.grid)

    def cache_key(self) -> dict[str, Any]:
        """The parameters that change the records (not ``num_proc``, ``strict``, ``progress`` or
        ``copy_images``)."""
        rows, cols = self.fmt.grid
        return {
            "grid": [rows, cols],
            "method": self.method,
            "seed": self.seed,
            "image_paths": self.image_paths,
            "image_store": self.image_store,
            "target_label": self.target_label,
        }


class Deferred:
    """A value made on first use: ``BuildResult(Deferred(load), ...)`` reads its dataset only when asked
    (the command line never asks, and reading it imports `datasets`: 2 s of CPU)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


class _MadeOnUse:
    """A dataclass field's descriptor: a `Deferred` stored in it is made, once, when first read."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.slot = f"_{name}"

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:  # read on the class: the field has no default
            raise AttributeError(self.name)
        value = obj.__dict__[self.slot]
        if isinstance(value, Deferred):
            value = obj.__dict__[self.slot] = value.make()
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


@dataclass
class BuildResult:
    """The built (or reused) dataset, where it is, and the build report. A build gives ``dataset`` as a
    `Deferred`: it is read from ``out_dir`` the first time ``result.dataset`` is used."""

    dataset: DatasetDict = _MadeOnUse()  # type: ignore[assignment]
    out_dir: Path
    report: dict[str, Any] = field(default_factory=dict)
