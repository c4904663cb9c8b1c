"""The data of a run: datasets (from arguments or the `data.path` folder), checked before any model is
loaded; the epoch order; the data loaders; the length of the run in optimizer steps; and the settings
(`Asking`) that the training data implies for the trained model.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
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
def _open_folder(path: str, where: str = "data.path") -> Any:
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


def _head(dataset: Any, n: int | None) -> Any:
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
    opened = open_sources(config, sources)
    train, evals = mix_sources(config, opened)
    train = _head(train, config.data.max_train_samples)
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
    _check_columns(train_dataset, where)
    if eval_dataset is not None:
        _check_columns(
            eval_dataset, "eval_dataset" if where == "train_dataset" else f"{d.path} split {d.eval_split!r}"
        )
    train_dataset = _head(train_dataset, d.max_train_samples)
    if eval_dataset is not None:
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


# -- several sources ------------------------------------------------------------------------------------
_SUFFIX_KINDS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".json.gz": "json"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


@dataclass
class Source:
    """One opened source of a mixture: its train and eval records, and the text4seg.json its folder holds."""

    name: str
    train: Any
    eval: Any = None
    saved: Asking | None = None
    weight: float = 1.0


def _source_name(src: SourceConfig) -> str:
    if src.name:
        return src.name
    stem = Path(src.path.rstrip("/")).name.split("*")[0] or src.path
    return stem.removesuffix(".gz").rsplit(".", 1)[0] if "." in stem else stem


def _source_kind(src: SourceConfig, where: str) -> str:
    """The kind of a source: as set, else a local folder, parquet/JSON files by suffix, else a Hub id."""
    if src.kind:
        return src.kind
    path = Path(src.path).expanduser()
    suffix = next((k for s, k in _SUFFIX_KINDS.items() if src.path.endswith(s)), None)
    if suffix:
        return suffix
    if path.is_dir():
        return "folder"
    if path.exists() or any(c in src.path for c in "*?[") or src.path.startswith(("/", ".", "~")):
        raise DataError(f"{where}: {src.path} does not exist (write it with `text4seg build`)")
    if not _HUB_ID.fullmatch(src.path):
        raise DataError(f"{where}: {src.path} is neither a local path nor a Hub dataset id")
    return "hub"


def _absolute_images(dataset: Any, root: Path) -> Any:
    """A folder's records with relative image paths made absolute, so mixing (which drops per-folder
    transforms) keeps them readable: lazily for a stream, in memory for a map-style set of paths."""
    from text4seg.protocol.records import resolve_image_path

    def resolve(record: dict[str, Any]) -> dict[str, Any]:
        rid = str(record.get("id", "?"))
        return {"images": [resolve_image_path(root, v, rid) for v in record.get("images") or []]}

    feature = getattr(dataset, "features", None) or {}
    if getattr(getattr(feature.get("images"), "feature", None), "dtype", None) != "string":
        return dataset
    if hasattr(dataset, "to_iterable_dataset"):
        return dataset.with_format(None).map(resolve, keep_in_memory=True, desc=f"image paths of {root}")
    return dataset.map(resolve, features=dataset.features)  # features kept known: mixing aligns on them


def _stream(dataset: Any, config: TrainConfig) -> Any:
    return dataset.to_iterable_dataset(num_shards=min(config.data.shards, max(1, len(dataset))))


def _open_folder_source(src: SourceConfig, config: TrainConfig, where: str) -> Source:
    from datasets import DatasetDict

    loaded = _open_folder(src.path, where)
    train_split, eval_split = (
        src.train_split or config.data.train_split,
        src.eval_split or config.data.eval_split,
    )
    if isinstance(loaded, DatasetDict):
        if train_split not in loaded:
            raise DataError(f"{where}: {src.path} has no split {train_split!r} (it has {', '.join(loaded)})")
        train, evaluation = loaded[train_split], loaded.get(eval_split) if eval_split else None
    else:
        train, evaluation = loaded, None
    root = Path(src.path).resolve()
    train = _stream(train.with_format(None), config) if config.data.streaming else train
    train = _absolute_images(train, root)
    evaluation = _absolute_images(evaluation, root) if evaluation is not None else None
    try:
        saved = Asking.load(src.path)
    except ValueError as err:
        raise DataError(str(err)) from None
    return Source(_source_name(src), train, evaluation, saved)


def _load_dataset(where: str, what: str, *args: Any, **kwargs: Any) -> Any:
    """`datasets.load_dataset(*args, **kwargs)`, or a one-line DataError: `where` cannot load `what`."""
    from datasets import load_dataset

    try:
        return load_dataset(*args, **kwargs)
    except Exception as err:  # datasets/hub raise many kinds (offline, missing files, bad JSON)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        offline = " (HF_HUB_OFFLINE=1: only cached datasets load)" if _offline() else ""
        raise DataError(f"{where}: cannot load {what}{offline}: {first}") from None


def _offline() -> bool:
    import datasets

    return bool(datasets.config.HF_HUB_OFFLINE)


def _open_files(src: SourceConfig, config: TrainConfig, where: str, kind: str) -> Source:
    files = {"train": src.path, **({"eval": src.eval_path} if src.eval_path and src.eval else {})}
    what = f"{kind} files {src.path}"
    loaded = _load_dataset(where, what, kind, data_files=files, streaming=config.data.streaming)
    return Source(_source_name(src), loaded["train"], loaded.get("eval"))


def _open_hub(src: SourceConfig, config: TrainConfig, where: str) -> Source:
    train_split, eval_split = (
        src.train_split or config.data.train_split,
        src.eval_split or config.data.eval_split,
    )
    streaming, what = config.data.streaming, f"{src.path!r} (not a local path) from the Hub"
    train = _load_dataset(where, what, src.path, split=train_split, streaming=streaming)
    evaluation = None
    if src.eval and eval_split:
        try:
            evaluation = _load_dataset(where, what, src.path, split=eval_split, streaming=streaming)
        except DataError:
            if src.eval_split:  # asked for by name: it must be there
                raise
    return Source(_source_name(src), train, evaluation)


_OPENERS = {
    "folder": _open_folder_source,
    "parquet": partial(_open_files, kind="parquet"),
    "json": partial(_open_files, kind="json"),
    "hub": _open_hub,
}
"""Source kind -> (SourceConfig, TrainConfig, where) -> Source."""


def _fit_schema(dataset: Any, where: str) -> Any:
    """The record schema's types for the columns a source has (`record_features`); a required column that
    does not fit is a DataError naming it, any other is left out (with a warning)."""
    from text4seg.protocol.records import record_features

    features = getattr(dataset, "features", None)
    if not features:
        return dataset
    schema = record_features()
    for column, have in list(features.items()):
        want = schema.get(column)
        if want is None or column == "images" or have == want:
            continue
        try:
            dataset = dataset.cast_column(column, want)
        except Exception as err:  # arrow cast errors
            if column in REQUIRED_COLUMNS or column == "id":
                raise DataError(
                    f"{where}: column {column!r} does not fit the record schema ({err})"
                ) from None
            warnings.warn(f"{where}: column {column!r} left out (not the record schema's type)", stacklevel=3)
            dataset = dataset.remove_columns(column)
    return dataset


def open_sources(config: TrainConfig, sources: list[SourceConfig] | None = None) -> list[Source]:
    """Every source of `data.sources` (or `sources`), opened (folders, files, Hub ids), checked for the required columns
    and cast to the record schema; DataError naming the source on the first problem. Loads no model."""
    d, opened = config.data, []
    for i, src in enumerate(d.sources if sources is None else sources):
        where = f"data.sources[{i}] ({_source_name(src)})"
        kind = _source_kind(src, where)
        source = _OPENERS[kind](src, config, where)
        _check_columns(source.train, f"{where} {kind} {src.path}")
        source.train = _fit_schema(source.train, where)
        if source.eval is not None and src.eval:
            _check_columns(source.eval, f"{where} eval split")
            source.eval = _head(_fit_schema(source.eval, where), d.max_eval_samples)
        else:
            source.eval = None
        if src.max_samples is not None:
            source.train = _head(source.train, src.max_samples)
        source.weight = src.weight
        if any(o.name == source.name for o in opened):
            raise DataError(f"{where}: another source is named {source.name!r}; give each one a name")
        opened.append(source)
    return opened


def _align_images(datasets: list[Any]) -> list[Any]:
    """Embedded images and path strings in one mixture: the paths cast to images (read when used)."""
    from datasets import Image, List

    kinds = {str(getattr(ds, "features", {}) and ds.features.get("images")) for ds in datasets}
    if len(kinds) < 2:
        return datasets
    return [
        ds.cast_column("images", List(Image())) if ds.features and "images" in ds.features else ds
        for ds in datasets
    ]


def mix_sources(config: TrainConfig, sources: list[Source]) -> tuple[Any, dict[str, Any]]:
    """(the mixed training records, {source name: eval records}) of opened sources: interleaved with
    probabilities from their weights (`data.stopping_strategy`, seeded by loop.seed) or concatenated."""
    from datasets import concatenate_datasets, interleave_datasets

    trains = _align_images([s.train for s in sources])
    if len(trains) == 1:
        mixed = trains[0]
    elif config.data.mix == "concatenate":
        mixed = concatenate_datasets(trains)
    else:
        total = sum(s.weight for s in sources)
        mixed = interleave_datasets(
            trains,
            probabilities=[s.weight / total for s in sources],
            seed=config.loop.seed,
            stopping_strategy=config.data.stopping_strategy,
        )
    return mixed, {s.name: s.eval for s in sources if s.eval is not None}


def _source_asking(source: Source, limit: int = 500) -> Asking:
    """A source's settings: its folder's text4seg.json, unset fields filled from its first records."""
    rows = source.train
    if not hasattr(rows, "select"):  # a stream: its first records, without decoding images
        names = [
            c for c in ("grid", "task", "labels", "expression", "messages") if c in (rows.column_names or [])
        ]
        rows = list((rows.select_columns(names) if names else rows).take(limit))
    inferred = Asking.from_records(rows, limit=limit)
    return Asking(**{**inferred.to_dict(), **(source.saved.to_dict() if source.saved else {})})


def agreed_asking(sources: list[Source]) -> Asking:
    """The settings (text4seg.json) of a model trained on several sources: each field the sources that set
    it agree on; a field they disagree on (e.g. two grids) is left unset, with a warning naming the values."""
    import json

    from text4seg.protocol.asking import SETTINGS

    each = {s.name: _source_asking(s).to_dict() for s in sources}
    agreed = {}
    for key in SETTINGS:
        values = {name: d[key] for name, d in each.items() if key in d}
        if len({json.dumps(v) for v in values.values()}) == 1:
            agreed[key] = next(iter(values.values()))
        elif values:
            shown = ", ".join(f"{name}: {v}" for name, v in values.items())
            warnings.warn(
                f"data.sources disagree on {key} ({shown}); text4seg.json leaves it unset", stacklevel=2
            )
    return Asking.from_dict(agreed)


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
