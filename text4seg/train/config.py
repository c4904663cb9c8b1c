"""Typed training configuration, read from a recipe YAML and overridden by `key=value` arguments.

A recipe is a YAML mapping with the sections below (every key optional; unknown keys are errors that
name the file and the key). Overrides use dotted paths: `optim.lr=1e-4 loop.max_steps=10 model.dtype=bf16`;
values are parsed as YAML (`true`, `3`, `[a, b]`, `null`). Numbers must be finite (no `inf`, `nan`).

The public entry points, for recipes in recipes/ or anywhere else (e.g. examples/demo):

    load_config("my_recipe.yaml", ["optim.lr=1e-4"])     # a file + overrides -> TrainConfig
    TrainConfig.from_dict({"optim": {"lr": 1e-4}}, ["loop.max_steps=5"])   # a mapping + overrides
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A recipe or override that does not fit the schema (says which key and why)."""


@dataclass
class ModelConfig:
    """Which model to fine-tune. `name_or_path` is a hub id or folder, or `tiny:<arch>` for a random tiny model."""

    name_or_path: str = ""
    dtype: str = "auto"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    tiny: dict[str, Any] = field(default_factory=dict)  # build_tiny keyword overrides for `tiny:<arch>`
    processor: dict[str, Any] = field(
        default_factory=dict
    )  # AutoProcessor.from_pretrained kwargs (image size)


@dataclass
class SourceConfig:
    """One dataset of a mixture (`data.sources`): a folder written by `text4seg build` (or any
    `save_to_disk` folder), parquet/JSON files (a path or glob), or a Hub dataset id (tried only when
    `path` is not a local path). `kind` is inferred from `path` unless given; `weight` is its share of the
    mixed stream (weights are normalised, so ratios work too); splits default to `data.train_split` /
    `data.eval_split`; `eval_path` holds the eval records of a parquet/JSON source."""

    path: str = ""
    name: str = ""  # in logs (`eval_loss/<name>`); the folder or file name by default
    kind: str = ""  # "" (infer) | "folder" | "parquet" | "json" | "hub"
    weight: float = 1.0
    train_split: str | None = None
    eval_split: str | None = None
    eval_path: str | None = None
    eval: bool = True  # false: no eval split for this source
    max_samples: int | None = None


SOURCE_KINDS = ("", "folder", "parquet", "json", "hub")
MIXES = ("interleave", "concatenate")
STOPPING = ("first_exhausted", "all_exhausted", "all_exhausted_without_replacement")


@dataclass
class DataConfig:
    """Training data: a `datasets` folder written by `text4seg build` (`path`, DatasetDict with splits),
    or several datasets mixed (`sources`, see SourceConfig): interleaved with probabilities from their
    weights (`mix: interleave`, `stopping_strategy`, seeded by loop.seed) or concatenated. `streaming`
    reads them as `IterableDataset`s (no length: set loop.max_steps) and resumes where it stopped."""

    path: str = ""
    sources: list[SourceConfig] = field(default_factory=list)
    mix: str = "interleave"
    stopping_strategy: str = "all_exhausted"
    streaming: bool = False
    shards: int = 16  # a folder read as a stream: `Dataset.to_iterable_dataset(num_shards=...)`
    train_split: str = "train"
    eval_split: str | None = "val"
    max_length: int = 2048
    max_train_samples: int | None = None
    max_eval_samples: int | None = 64
    shuffle: bool = True
    num_workers: int = 0


@dataclass
class FinetuneConfig:
    """What is trained: LoRA on the language model (default) or full fine-tuning; projector/vision switches."""

    method: str = "lora"  # "lora" | "full"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target: str | list[str] = (
        "language_model"  # "language_model" = every Linear of the LM, or PEFT names
    )
    train_projector: bool = False
    train_vision: bool = False
    projector_lr: float | None = None
    vision_lr: float | None = None
    gradient_checkpointing: bool = False


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine (or linear/constant) decay to `min_lr_ratio * lr`."""

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    max_grad_norm: float | None = 1.0
    scheduler: str = "cosine"  # "cosine" | "linear" | "constant"
    warmup_steps: int = 0
    warmup_ratio: float = 0.0
    min_lr_ratio: float = 0.0
    schedule_by: str = (
        "steps"  # "steps" | "time": decay over loop.max_minutes of wall clock (not resumable exactly)
    )


@dataclass
class LoopConfig:
    """Batches, length of training, precision, logging/eval/checkpoint cadence."""

    batch_size: int = 4
    grad_accum: int = 1
    max_steps: int | None = None
    epochs: float = 1.0
    max_minutes: float | None = None
    mixed_precision: str = "no"  # "no" | "bf16" | "fp16"
    log_every: int = 1
    eval_every: int | None = None
    eval_batches: int | None = 16
    save_every: int | None = None
    keep_checkpoints: int = 2
    seed: int = 0
    progress: bool = True  # tqdm bar on the main process


@dataclass
class OutputConfig:
    """Where results go; whether to resume and what to write at the end."""

    dir: str = "runs/default"
    resume: bool = True  # continue from the latest complete checkpoint in dir/checkpoints
    save_merged: bool = False
    report_to: list[str] = field(default_factory=list)  # Accelerate trackers, e.g. ["tensorboard"]


@dataclass
class TrainConfig:
    """A whole training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], overrides: list[str] | None = None, where: str = ""
    ) -> TrainConfig:
        """A validated config from a recipe mapping (the YAML's sections) plus `key=value` overrides.

        Every key is optional; an unknown key, a value of the wrong type, a non-finite number or a value
        `validate` refuses raises ConfigError naming the key (prefixed by `where`, e.g. the file name).
        """
        return config_from_dict(data, overrides, where)

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain dicts (what out/config.json holds; `from_dict` reads it back)."""
        return dataclasses.asdict(self)

    def validate(self) -> TrainConfig:
        """Check values that the schema's types cannot; returns self."""
        checks = [
            (self.finetune.method in ("lora", "full"), "finetune.method must be 'lora' or 'full'"),
            (
                self.optim.scheduler in ("cosine", "linear", "constant"),
                "optim.scheduler: cosine|linear|constant",
            ),
            (
                self.loop.mixed_precision in ("no", "bf16", "fp16"),
                "loop.mixed_precision must be no, bf16 or fp16",
            ),
            (
                self.loop.batch_size >= 1 and self.loop.grad_accum >= 1,
                "loop.batch_size/grad_accum must be >= 1",
            ),
            (self.loop.max_steps is None or self.loop.max_steps >= 1, "loop.max_steps must be >= 1"),
            (self.data.max_length >= 8, "data.max_length is too small"),
            (self.optim.lr > 0, "optim.lr must be > 0"),
            (0 <= self.optim.warmup_ratio < 1, "optim.warmup_ratio must be in [0, 1)"),
            (len(self.optim.betas) == 2, "optim.betas must have two values"),
            (self.optim.schedule_by in ("steps", "time"), "optim.schedule_by must be 'steps' or 'time'"),
            (
                self.optim.schedule_by == "steps" or self.loop.max_minutes is not None,
                "optim.schedule_by=time needs loop.max_minutes",
            ),
        ]
        checks += _data_checks(self)
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self


def _data_checks(config: TrainConfig) -> list[tuple[bool, str]]:
    """The checks of `data` (sources, mixing, streaming) as (ok, message) pairs."""
    d, sources = config.data, config.data.sources
    names = [s.name for s in sources if s.name]
    checks = [
        (not (d.path and sources), "set data.path (one folder) or data.sources (several), not both"),
        (d.mix in MIXES, f"data.mix must be one of {', '.join(MIXES)}"),
        (d.stopping_strategy in STOPPING, f"data.stopping_strategy must be one of {', '.join(STOPPING)}"),
        (d.shards >= 1, "data.shards must be >= 1"),
        (len(names) == len(set(names)), f"data.sources: names must differ, got {names}"),
        (
            not d.streaming or config.loop.max_steps is not None,
            "data.streaming has no length: set loop.max_steps to bound the run",
        ),
        (
            not d.streaming or d.num_workers == 0,
            "data.streaming resumes exactly only with data.num_workers=0",
        ),
    ]
    for i, s in enumerate(sources):
        where = f"data.sources[{i}]"
        checks += [
            (bool(s.path), f"{where}.path is empty"),
            (s.kind in SOURCE_KINDS, f"{where}.kind must be one of {', '.join(SOURCE_KINDS[1:])}"),
            (s.weight > 0, f"{where}.weight must be > 0"),
        ]
    return checks


def _convert(value: Any, hint: Any, where: str) -> Any:
    """Check/convert a YAML value against a type hint (dataclass, Optional, list, dict, scalars)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return dataclass_from_dict(hint, _mapping(value, where), where)
    if origin in (typing.Union, types.UnionType):
        return _union(value, hint, where)
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        return dict(_mapping(value, where))
    if hint is Any:
        return value
    if hint in _SCALARS:
        return _SCALARS[hint](value, where)
    raise ConfigError(f"{where}: unsupported type {hint}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return value


def _union(value: Any, hint: Any, where: str) -> Any:
    """The first option of `hint` (e.g. `int | None`) that `value` fits."""
    options = typing.get_args(hint)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{where}: may not be null")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _convert(value, option, where)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {hint}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{where}: expected true/false, got {value!r}")


def _int(value: Any, where: str) -> int:
    if _is_number(value) and float(value).is_integer():
        return int(value)
    raise ConfigError(f"{where}: expected an integer, got {value!r}")


def _finite(value: Any, where: str) -> float:
    """A float setting: a finite number (YAML reads "1e-4", without a dot, as a string; inf/nan refused)."""
    number = float(value) if _is_number(value) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None:
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(number):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    return number


def _str(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"  # YAML 1.1 reads an unquoted no/off as false
    if _is_number(value):
        return str(value)
    raise ConfigError(f"{where}: expected a string, got {value!r}")


_SCALARS = {bool: _bool, int: _int, float: _finite, str: _str}
"""Scalar type hint -> its checker/converter."""


def dataclass_from_dict(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """An instance of the dataclass `cls` from a mapping, each value checked and converted against its
    field's type hint as a recipe's are (nested dataclasses, Optional, lists, scalars); ConfigError naming
    the key (`where` prefixes it) for an unknown key or a bad value. For settings of one's own that
    should read like a recipe (e.g. examples/demo's `DemoSettings`)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where or 'top level'}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}"
        )
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """A command-line value, read as YAML (so numbers, booleans, null and lists keep their type)."""
    import yaml

    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a nested mapping (creating sections as needed)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=1e-4)")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
            else:
                child = dict(child)
            node[part] = child
            node = child
        node[parts[-1]] = parse_value(raw)
    return out


def config_from_dict(
    data: dict[str, Any], overrides: list[str] | None = None, where: str = ""
) -> TrainConfig:
    """Build a validated `TrainConfig` from a mapping plus `key=value` overrides."""
    merged = apply_overrides(data or {}, list(overrides or []))
    try:
        return dataclass_from_dict(TrainConfig, merged, "").validate()
    except ConfigError as err:
        if where:
            raise ConfigError(f"{where}: {err}") from None
        raise


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    """Read a recipe YAML file (anywhere: in recipes/, in an example, beside a run) and apply overrides.

    `overrides` are `section.key=value` strings whose values are read as YAML, e.g.
    `["optim.lr=1e-4", "loop.max_steps=10", "data.eval_split=null"]`. Returns a validated `TrainConfig`;
    raises ConfigError naming the file and the key for a missing or malformed recipe or a bad value.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a YAML mapping of sections")
    return config_from_dict(data, overrides, where=str(path))
