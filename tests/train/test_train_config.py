"""Recipe parsing: typed sections, dotted overrides, clear errors."""

from __future__ import annotations

import pytest

from text4seg.train.config import (
    ConfigError,
    apply_overrides,
    config_from_dict,
    dataclass_from_dict,
    load_config,
)


def test_yaml_and_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model:\n  name_or_path: org/model\noptim:\n  lr: 1e-4\nloop:\n  batch_size: 2\n")
    cfg = load_config(
        recipe,
        [
            "optim.lr=3e-3",
            "loop.max_steps=7",
            "finetune.lora_target=[q_proj, v_proj]",
            "model.tiny.image_size=64",
            "data.eval_split=null",
            "output.save_merged=true",
        ],
    )
    assert cfg.model.name_or_path == "org/model"
    assert cfg.optim.lr == pytest.approx(3e-3)
    assert cfg.loop.max_steps == 7 and cfg.loop.batch_size == 2
    assert cfg.finetune.lora_target == ["q_proj", "v_proj"]
    assert cfg.model.tiny == {"image_size": 64}
    assert cfg.data.eval_split is None
    assert cfg.output.save_merged is True
    assert load_config(recipe).optim.lr == pytest.approx(1e-4)  # "1e-4" is a YAML string; read as a float


def test_a_settings_class_of_ones_own_reads_like_a_recipe():
    import dataclasses

    @dataclasses.dataclass
    class Knobs:
        size: int = 1
        rate: float | None = None
        names: list[str] = dataclasses.field(default_factory=list)

    assert dataclass_from_dict(Knobs, {"size": 3.0, "rate": "1e-3", "names": ["a"]}) == Knobs(3, 1e-3, ["a"])
    with pytest.raises(ConfigError, match=r"knobs\.size: expected an integer"):
        dataclass_from_dict(Knobs, {"size": "three"}, "knobs")
    with pytest.raises(ConfigError, match="knobs: unknown key"):
        dataclass_from_dict(Knobs, {"colour": 1}, "knobs")


@pytest.mark.parametrize(
    ("data", "overrides", "message"),
    [
        ({"loop": {"batchsize": 2}}, [], "unknown key"),
        ({}, ["loop.batch_size=two"], "expected an integer"),
        ({}, ["finetune.method=qlora"], "finetune.method"),
        ({}, ["optim"], "not key=value"),
        ({"optim": 3}, [], "expected a mapping"),
        ({}, ["loop.max_steps=0"], "max_steps"),
        ({"data": {"path": "a", "sources": [{"path": "b"}]}}, [], "not both"),
        ({"data": {"sources": [{"path": "a", "weight": 0}]}}, [], r"sources\[0\]\.weight"),
        ({"data": {"sources": [{"weight": 1}]}}, [], r"sources\[0\]\.path is empty"),
        ({"data": {"sources": [{"path": "a", "kind": "csv"}]}}, [], r"sources\[0\]\.kind"),
        (
            {"data": {"sources": [{"path": "a", "name": "x"}, {"path": "b", "name": "x"}]}},
            [],
            "names must differ",
        ),
        ({"data": {"sources": [{"path": "a", "colour": 1}]}}, [], r"data\.sources\[0\].*unknown key"),
        ({}, ["data.mix=shuffle"], "data.mix"),
        ({}, ["data.stopping_strategy=never"], "data.stopping_strategy"),
        ({}, ["data.streaming=true"], "loop.max_steps"),
    ],
)
def test_errors_name_the_key(data, overrides, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data, overrides)


def test_error_names_the_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("optim:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*optim.*lrr"):
        load_config(recipe)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_do_not_mutate_input():
    data = {"optim": {"lr": 1.0}}
    out = apply_overrides(data, ["optim.lr=2"])
    assert data["optim"]["lr"] == 1.0 and out["optim"]["lr"] == 2


def test_sources_read_as_typed_sections():
    cfg = config_from_dict(
        {"data": {"sources": [{"path": "a", "weight": 3}, {"path": "org/b", "kind": "hub", "eval": False}]}},
        ["data.mix=concatenate", "data.streaming=true", "loop.max_steps=5"],
    )
    assert [s.weight for s in cfg.data.sources] == [3.0, 1.0] and cfg.data.sources[1].kind == "hub"
    assert cfg.data.sources[1].eval is False and cfg.data.streaming and cfg.data.mix == "concatenate"
    assert config_from_dict(cfg.to_dict()).data.sources == cfg.data.sources  # config.json reads back
