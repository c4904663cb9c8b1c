"""The data of a run: datasets (from arguments, the `data.path` folder, or mixed from `data.sources` by
`train.sources`), checked before any model is loaded; the epoch order; the data loaders; the length of the run in optimizer steps; and the settings
(`Asking`) that the training data implies for the trained model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from text4seg.protocol.asking import Asking

from .config import SourceConfig, TrainConfig

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
def open_folder(path: str, where: str = "data.path") -> Any:
    """The saved dataset in `path` (`protocol.records.load_records`: images stored once in the folder are
    found wherever it now is), or DataError naming the folder when it is not a saved dataset."""
    from text4seg.protocol.records import load_records

    if not Path(path).exists():
        raise DataError(f"{where} {path} does not exist (write it with `text4seg build`)")
    try:
        return load_records(path)
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(f"{where} {path} is not a saved dataset ({str(err).splitlines()[0]})") from None


def _splits(config: TrainConfig) -> tuple[Any, Any]:
    """(train, eval or None) from the `data.path` folder; DataError naming a missing train split."""
    from datasets import DatasetDict

    d = config.data
    loaded = open_folder(d.path)
    if not isinstance(loaded, DatasetDict):
        return loaded, None
    if d.train_split not in loaded:
        raise DataError(
            f"{d.path} has no split {d.train_split!r} (it has {', '.join(loaded)}): set data.train_split"
        )
    if d.eval_split and d.eval_split not in loaded:
        warnings.warn(
            f"{d.path} has no split {d.eval_split!r} (it has {', '.join(loaded)}): training without "
            "evaluation; set data.eval_split to one of those, or to null to silence this",
            stacklevel=3,
        )
    return loaded[d.train_split], loaded.get(d.eval_split) if d.eval_split else None


def check_columns(dataset: Any, where: str) -> None:
    """DataError naming `where` and the missing column when `dataset` lacks one of REQUIRED_COLUMNS."""
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


def first_records(dataset: Any, n: int | None) -> Any:
    """The first `n` records (all when n is None); a stream is cut lazily."""
    if n is None:
        return dataset
    if hasattr(dataset, "select"):
        return dataset.select(range(min(n, len(dataset))))
    if hasattr(dataset, "take"):
        return dataset.take(n)
    return list(dataset)[:n]


def load_datasets(
    config: TrainConfig, train_dataset: Any = None, eval_dataset: Any = None
) -> tuple[Any, Any]:
    """Train/eval datasets from arguments, from the `datasets` folder in `data.path`, or mixed from
    `data.sources` (eval: {source name: records}), checked for their splits and columns (DataError, a
    ValueError, naming what is missing). Loads no model."""
    train, evaluation, _ = load_data(config, train_dataset, eval_dataset)
    return train, evaluation


def load_data(
    config: TrainConfig, train_dataset: Any = None, eval_dataset: Any = None
) -> tuple[Any, Any, Asking]:
    """(train records, eval records, the settings of the trained model): `load_datasets` plus
    `trained_asking`, or for `data.sources` the settings the sources agree on (`agreed_asking`)."""
    sources = _source_configs(config) if train_dataset is None else []
    if not sources:
        train, evaluation = _given_or_folder(config, train_dataset, eval_dataset)
        return train, evaluation, trained_asking(config, train, from_folder=train_dataset is None)
    from .sources import agreed_asking, mix_sources, open_sources

    opened = open_sources(config, sources)
    train, evals = mix_sources(config, opened)
    train = first_records(train, config.data.max_train_samples)
    if hasattr(train, "__len__") and len(train) == 0:
        raise DataError("the training set (data.sources) is empty")
    return train, (eval_dataset if eval_dataset is not None else evals or None), agreed_asking(opened)


def _source_configs(config: TrainConfig) -> list[SourceConfig]:
    """`data.sources`, or `data.path` as the one folder source of a stream (`data.streaming`)."""
    d = config.data
    if d.sources:
        return list(d.sources)
    if d.streaming and d.path:
        return [SourceConfig(path=d.path, kind="folder", name=Path(d.path.rstrip("/")).name)]
    return []


def _given_or_folder(config: TrainConfig, train_dataset: Any, eval_dataset: Any) -> tuple[Any, Any]:
    d = config.data
    where = "train_dataset"
    if train_dataset is None:
        if not d.path:
            raise DataError(
                "no training data: set data.path to a folder written by `text4seg build` (or data.sources)"
            )
        train_dataset, from_folder = _splits(config)
        eval_dataset = eval_dataset if eval_dataset is not None else from_folder
        where = f"{d.path} split {d.train_split!r}"
    check_columns(train_dataset, where)
    if eval_dataset is not None:
        check_columns(
            eval_dataset, "eval_dataset" if where == "train_dataset" else f"{d.path} split {d.eval_split!r}"
        )
    train_dataset = first_records(train_dataset, d.max_train_samples)
    if eval_dataset is not None:
        eval_dataset = first_records(eval_dataset, d.max_eval_samples)
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
def is_stream(dataset: Any) -> bool:
    """Whether `dataset` is read as a stream (no length: a `datasets.IterableDataset`)."""
    return dataset is not None and not hasattr(dataset, "__len__")


def resumable_stream(stream: Any) -> Any:
    """A torch IterableDataset over the `datasets.IterableDataset` `stream` that keeps the stream's
    `state_dict()` after each record it hands out, so a checkpoint can record where the records the loop
    has *consumed* end (the loader reads ahead): `state_after(n)` is the state after the n-th record of
    the current epoch; `resume_from(state)` makes the next epoch of the same number start there."""
    import copy

    from torch.utils.data import IterableDataset

    class ResumableStream(IterableDataset):
        def __init__(self) -> None:
            self.stream, self.epoch, self.states = stream, 0, {0: None}

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch
            self.stream.set_epoch(epoch)

        def resume_from(self, state: dict[str, Any]) -> None:
            self.stream.load_state_dict(state)

        def state_after(self, records: int) -> dict[str, Any] | None:
            return self.states.get(records)

        def __iter__(self) -> Iterator[dict[str, Any]]:
            self.states = {0: None}
            for n, record in enumerate(self.stream, 1):
                self.states[n] = copy.deepcopy(self.stream.state_dict())
                self.states.pop(n - 4096, None)  # the loader reads a few batches ahead at most
                yield record

    return ResumableStream()


def _eval_loader(config: TrainConfig, collator: Any, dataset: Any) -> Any:
    import torch
    from torch.utils.data import DataLoader

    if dataset is None or (not is_stream(dataset) and not len(dataset)):
        return None
    return DataLoader(
        dataset,
        batch_size=config.loop.batch_size,
        collate_fn=collator,
        shuffle=False,
        generator=torch.Generator().manual_seed(config.loop.seed),
    )


def build_loaders(config: TrainConfig, collator: Any, train_ds: Any, eval_ds: Any) -> tuple[Any, Any, Any]:
    """(train loader, eval loader or None or {source name: eval loader}, the train loader's sampler: an
    EpochSampler, or for a stream the `resumable_stream` it reads)."""
    import torch
    from torch.utils.data import DataLoader

    loop = config.loop
    stream = is_stream(train_ds)
    sampler = (
        resumable_stream(train_ds) if stream else EpochSampler(len(train_ds), loop.seed, config.data.shuffle)
    )
    train_loader = DataLoader(
        sampler if stream else train_ds,
        batch_size=loop.batch_size,
        sampler=None if stream else sampler,
        collate_fn=collator,
        num_workers=config.data.num_workers,
        drop_last=False,
        # Its own generator: creating an iterator then never draws from the global RNG, so a resumed run
        # (which creates one more iterator) keeps the same dropout masks as an uninterrupted one.
        generator=torch.Generator().manual_seed(loop.seed),
    )
    if isinstance(eval_ds, dict):
        loaders = {name: _eval_loader(config, collator, ds) for name, ds in eval_ds.items()}
        eval_loader = {name: loader for name, loader in loaders.items() if loader is not None} or None
    else:
        eval_loader = _eval_loader(config, collator, eval_ds)
    return train_loader, eval_loader, sampler


def run_length(config: TrainConfig, train_size: int | None, num_processes: int) -> tuple[int, int]:
    """(batches per epoch in each process, optimizer steps of the whole run); a stream (`train_size`
    None) has no epochs: its run is `loop.max_steps` long."""
    loop = config.loop
    if train_size is None:
        if not loop.max_steps:
            raise DataError("streamed training data has no length: set loop.max_steps to bound the run")
        return loop.max_steps * loop.grad_accum, loop.max_steps
    per_process_batches = math.ceil(train_size / loop.batch_size / num_processes)
    steps_per_epoch = max(1, per_process_batches // loop.grad_accum)
    total_steps = loop.max_steps or max(1, math.ceil(steps_per_epoch * loop.epochs))
    return per_process_batches, total_steps
