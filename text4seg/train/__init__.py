"""Fine-tuning of any image-text-to-text model on descriptor records (Accelerate + PEFT).

    from text4seg.train import load_config, train
    result = train(load_config("recipes/tiny_cpu.yaml", ["loop.max_steps=20"]), train_dataset=records)

Torch and transformers are imported only when `train` runs. The modules, one job each: `config` (recipes and
overrides), `data` (datasets checked before a model loads, loaders), `sources` (several datasets mixed or
streamed), `collate` (answer-only labels), `setup` (model, PEFT, optimizer, schedule, Accelerator), `loop`
(the steps), `loss`, `checkpoints` (atomic save, resume from the newest intact one), `final` (final/,
merged/ and text4seg.json), `trainer` (`train`).
"""

from __future__ import annotations

from typing import Any

from .config import (
    ConfigError,
    DataConfig,
    FinetuneConfig,
    LoopConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    TrainConfig,
    config_from_dict,
    load_config,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "FinetuneConfig",
    "LoopConfig",
    "ModelConfig",
    "OptimConfig",
    "OutputConfig",
    "TrainConfig",
    "TrainResult",
    "Collator",
    "CheckpointError",
    "DataError",
    "NonFiniteLossError",
    "config_from_dict",
    "load_config",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult", "CheckpointError", "DataError", "NonFiniteLossError"):
        from . import trainer

        return getattr(trainer, name)
    if name == "Collator":
        from .collate import Collator

        return Collator
    raise AttributeError(f"module 'text4seg.train' has no attribute {name!r}")
