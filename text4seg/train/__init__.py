"""Fine-tuning of any image-text-to-text model on descriptor records (Accelerate + PEFT).

    from text4seg.train import load_config, train
    result = train(load_config("recipes/tiny_cpu.yaml", ["loop.max_steps=20"]), train_dataset=records)

Torch and transformers are imported only when `train` runs.
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
    "config_from_dict",
    "load_config",
    "train",
]


def __getattr__(name: str) -> Any:
    if name in ("train", "TrainResult"):
        from . import trainer

        return getattr(trainer, name)
    if name == "Collator":
        from .collate import Collator

        return Collator
    raise AttributeError(f"module 'text4seg.train' has no attribute {name!r}")
