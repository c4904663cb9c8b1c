"""Several datasets in one run (`data.sources`): each source opened (a `text4seg build`/`save_to_disk`
folder, parquet/JSON files, or a Hub dataset id), checked and cast to the record schema before any model
loads; mixed with `datasets.interleave_datasets` (probabilities from the weights) or `concatenate_datasets`,
as map-style datasets or streams (`data.streaming`); and the settings (text4seg.json) the sources agree on.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from text4seg.protocol.asking import Asking

from .config import SourceConfig, TrainConfig
from .data import REQUIRED_COLUMNS, DataError, check_columns, first_records, open_folder

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
    """`name`, else the folder's or file's name without its suffix (a glob's folder; a Hub id's last part)."""
    if src.name:
        return src.name
    path = Path(src.path.rstrip("/"))
    if any(c in path.name for c in "*?["):
        path = path.parent
    name = path.name
    for suffix in _SUFFIX_KINDS:
        name = name.removesuffix(suffix)
    return name or src.path


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


def _split_names(src: SourceConfig, config: TrainConfig) -> tuple[str, str | None]:
    """(train split, eval split) of a source: its own, else `data.train_split` / `data.eval_split`."""
    return src.train_split or config.data.train_split, src.eval_split or config.data.eval_split


def _open_folder_source(src: SourceConfig, config: TrainConfig, where: str) -> Source:
    from datasets import DatasetDict

    loaded = open_folder(src.path, where)
    train_split, eval_split = _split_names(src, config)
    if isinstance(loaded, DatasetDict):
        if train_split not in loaded:
            raise DataError(f"{where}: {src.path} has no split {train_split!r} (it has {', '.join(loaded)})")
        train, evaluation = loaded[train_split], loaded.get(eval_split) if eval_split else None
    else:
        train, evaluation = loaded, None
    root = Path(src.path).resolve()
    train = _stream(train.with_format(None), config) if config.data.streaming else train
    train = _absolute_images(train, root)  # the eval records, not mixed, keep their folder's reader
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
    train_split, eval_split = _split_names(src, config)
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
        check_columns(source.train, f"{where} {kind} {src.path}")
        source.train = _fit_schema(source.train, where)
        if source.eval is not None and src.eval:
            check_columns(source.eval, f"{where} eval split")
            source.eval = first_records(_fit_schema(source.eval, where), d.max_eval_samples)
        else:
            source.eval = None
        if src.max_samples is not None:
            source.train = first_records(source.train, src.max_samples)
        source.weight = src.weight
        if any(o.name == source.name for o in opened):
            raise DataError(f"{where}: another source is named {source.name!r}; give each one a name")
        opened.append(source)
    return opened


def _align_images(datasets: list[Any]) -> list[Any]:
    """Embedded images and path strings in one mixture: the paths cast to images (read when used); a
    source that already embeds them, or has no images, is left as it is (a cast rewrites a dataset)."""
    from datasets import Image, List

    images = List(Image())
    have = [(getattr(ds, "features", None) or {}).get("images") for ds in datasets]
    if len({str(f) for f in have if f is not None}) < 2:
        return datasets
    return [
        ds.cast_column("images", images) if f is not None and f != images else ds
        for ds, f in zip(datasets, have, strict=True)
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
