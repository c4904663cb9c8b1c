"""The demo's settings: recipe.yaml (a `text4seg.train` recipe, the same typed `TrainConfig`) and
demo.yaml (the knobs only the example has), both overridden with the train config's `key.sub=value` items:
items starting with `demo.` go to demo.yaml's settings, all others to the recipe."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from text4seg.train.config import ConfigError, TrainConfig, apply_overrides, load_config

HERE = Path(__file__).resolve().parent
RECIPE = HERE / "recipe.yaml"
DEMO_SETTINGS = HERE / "demo.yaml"
ANSWERS = ("prefix", "block", "sentence")
ANSWER_SENTENCES = {"prefix": "free", "block": "none", "sentence": "templates"}
"""The `Asking.answer_sentences` each answer form is saved with."""


@dataclass(frozen=True)
class DemoSettings:
    """The demo-only knobs (demo.yaml documents each)."""

    num_images: int = 6000
    target_label: str | None = "target"
    answer: str = "prefix"
    curriculum: int = 5000
    color_stage: int = 10000
    group_by_image: bool = False
    question_first: bool = True
    fit_tokenizer: bool = True
    vocab_size: int = 2000
    whole_rows: bool = True
    vision_positions: str = "sincos"
    vision_position_scale: float | None = None
    eval_samples: int = 500
    calibration_samples: int = 200
    background_bias: float | None = None
    constrained: bool = True
    examples: int = 12
    threads: int | None = 2
    processes: int = 1

    def __post_init__(self) -> None:
        if self.answer not in ANSWERS:
            raise ConfigError(f"demo.answer must be one of {', '.join(ANSWERS)}, got {self.answer!r}")
        if self.vision_positions not in ("sincos", "random"):
            raise ConfigError(
                f"demo.vision_positions must be sincos or random, got {self.vision_positions!r}"
            )
        if self.processes < 1:
            raise ConfigError("demo.processes must be >= 1")
        if self.num_images < 1:
            raise ConfigError("demo.num_images must be >= 1")


def load(
    overrides: list[str] | None = None, recipe: str | Path = RECIPE, demo: str | Path = DEMO_SETTINGS
) -> tuple[TrainConfig, DemoSettings]:
    """The training config and the demo settings, each with its overrides applied; ConfigError on a bad
    key or value (naming the file)."""
    import yaml

    items = list(overrides or [])
    own = [item[len("demo.") :] for item in items if item.startswith("demo.")]
    config = load_config(recipe, [item for item in items if not item.startswith("demo.")])
    try:
        values = yaml.safe_load(Path(demo).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{demo}: not readable ({err})") from None
    return config, demo_settings(apply_overrides(values, own), str(demo))


def demo_settings(values: dict[str, Any], where: str = "demo") -> DemoSettings:
    """`DemoSettings` from a mapping, typed by the train config's own conversion (so `--set demo.x=...`
    reads values exactly as `--set optim.lr=...` does)."""
    from text4seg.train.config import dataclass_from_dict

    try:
        return dataclass_from_dict(DemoSettings, values, "demo")
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None
