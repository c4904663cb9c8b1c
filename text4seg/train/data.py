"""The data of a run: datasets (from arguments or the `data.path` folder), checked before any model is
loaded; the epoch order; the data loaders; the length of the run in optimizer steps; and the settings
(`Asking`) that the training data implies for the trained model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from text4seg.protocol.asking import Asking

from .config import TrainConfig

REQUIRED_COLUMNS = ("messages",)
"""Columns every training/eval record needs (docs/RECORDS.md); `images` may be absent for text-only records."""


class DataError(ValueError):
    """The training data is missing, or lacks a split or a column (the message names which)."""


class EpochSampler:
    """Indices of one epoch: a permutation fixed by (seed, epoch), so a resumed run sees the same order."""

    def __init__(self, size: int, seed: int, shuffle: bool = True) -> None:
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        import numpy as np

        if not self.shuffle:
            return iter(range(self.size))
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.size).tolist())

    def __len__(self) -> int:
        return self.size


# -- datasets ----------------------------------------------------------------------------------------
def _open_folder(path: str) -> Any:
    """The saved dataset in `path` (`protocol.records.load_records`: images stored once in the folder are
    found wherever it now is), or DataError naming the folder when it is not a saved dataset."""
    from text4seg.protocol.records import load_records

    if not Path(path).exists():
        raise DataError(f"data.path {path} does not exist (write it with `text4seg build`)")
    try:
        return load_records(path)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(f"data.path {path} is not a saved dataset ({str(err).splitlines()[0]})") from None


def _splits(config: TrainConfig) -> tuple[Any, Any]:
    """(train, eval or None) from the `data.path` folder; DataError naming a missing train split."""
    from datasets import DatasetDict

    d = config.data
    loaded = _open_folder(d.path)
    if not isinstance(loaded, DatasetDict):
        return loaded, None
    if d.train_split not in loaded:
        raise DataError(
            f"{d.path} has no split {d.train_split!r} (it has {', '.join(loaded)}): set data.train_split"
        )
    return loaded[d.train_split], loaded.get(d.eval_split) if d.eval_split else None


def _check_columns(dataset: Any, where: str) -> None:
    names = getattr(dataset, "column_names", None)
    if names is None:  # a list of records: the first one stands for all
        first = next(iter(dataset), None)
        if first is None:
            return
        names = list(first) if isinstance(first, dict) else []
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise DataError(
            f"{where} has no column {', '.join(map(repr, missing))} (it has {', '.join(names) or 'none'}); "
            "records follow docs/RECORDS.md"
        )


def _head(dataset: Any, n: int) -> Any:
    if hasattr(dataset, "select"):
        return dataset.select(range(min(n, len(dataset))))
    return list(dataset)[:n]


def load_datasets(
    config: TrainConfig, train_dataset: Any = None, eval_dataset: Any = None
) -> tuple[Any, Any]:
    """Train/eval datasets from arguments or from the `datasets` folder in `data.path`, checked for their
    splits and columns (DataError, a ValueError, naming what is missing). Loads no model."""
    d = config.data
    where = "train_dataset"
    if train_dataset is None:
        if not d.path:
            raise DataError("no training data: set data.path to a folder written by `text4seg build`")
        train_dataset, from_folder = _splits(config)
        eval_dataset = eval_dataset if eval_dataset is not None else from_folder
        where = f"{d.path} split {d.train_split!r}"
    _check_columns(train_dataset, where)
    if eval_dataset is not None:
        _check_columns(
            eval_dataset, "eval_dataset" if where == "train_dataset" else f"{d.path} split {d.eval_split!r}"
        )
    if d.max_train_samples is not None:
        train_dataset = _head(train_dataset, d.max_train_samples)
    if eval_dataset is not None and d.max_eval_samples is not None:
        eval_dataset = _head(eval_dataset, d.max_eval_samples)
    if len(train_dataset) == 0:
        raise DataError(f"the training set ({where}) is empty")
    return train_dataset, eval_dataset


def trained_asking(config: TrainConfig, train_dataset: Any, from_folder: bool) -> Asking:
    """How the trained model must be asked: the data folder's own text4seg.json when the training data came
    from `data.path` and its maker saved one (`Asking.save`), its unset fields filled from the records;
    otherwise `Asking.from_records(train_dataset)`."""
    inferred = Asking.from_records(train_dataset)
    saved = None
    if from_folder and config.data.path:
        try:
            saved = Asking.load(config.data.path)
        except ValueError as err:
            raise DataError(str(err)) from None
    if saved is None:
        return inferred
    return Asking(**{**inferred.to_dict(), **saved.to_dict()})


# -- loaders and the length of a run ------------------------------------------------------------------
def build_loaders(config: TrainConfig, collator: Any, train_ds: Any, eval_ds: Any) -> tuple[Any, Any, Any]:
    """(train loader, eval loader or None, the train loader's EpochSampler)."""
    import torch
    from torch.utils.data import DataLoader

    loop = config.loop
    sampler = EpochSampler(len(train_ds), loop.seed, config.data.shuffle)
    train_loader = DataLoader(
        train_ds,
        batch_size=loop.batch_size,
        sampler=sampler,
        collate_fn=collator,
        num_workers=config.data.num_workers,
        drop_last=False,
        # Its own generator: creating an iterator then never draws from the global RNG, so a resumed run
        # (which creates one more iterator) keeps the same dropout masks as an uninterrupted one.
        generator=torch.Generator().manual_seed(loop.seed),
    )
    eval_loader = None
    if eval_ds is not None and len(eval_ds):
        eval_loader = DataLoader(
            eval_ds,
            batch_size=loop.batch_size,
            collate_fn=collator,
            shuffle=False,
            generator=torch.Generator().manual_seed(loop.seed),
        )
    return train_loader, eval_loader, sampler


def run_length(config: TrainConfig, train_size: int, num_processes: int) -> tuple[int, int]:
    """(batches per epoch in each process, optimizer steps of the whole run)."""
    loop = config.loop
    per_process_batches = math.ceil(train_size / loop.batch_size / num_processes)
    steps_per_epoch = max(1, per_process_batches // loop.grad_accum)
    total_steps = loop.max_steps or max(1, math.ceil(steps_per_epoch * loop.epochs))
    return per_process_batches, total_steps
