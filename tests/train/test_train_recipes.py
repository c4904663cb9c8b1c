"""Every recipe parses, and its configuration trains a tiny random model of the same architecture for 2 steps."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from text4seg.models.tiny import build_tiny
from text4seg.train import load_config, train

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
# recipe -> tiny architecture standing in for the real checkpoint
ARCH_OF = {
    "qwen2_5_vl_3b.yaml": "qwen2_5_vl",
    "qwen2_5_vl_3b_mix.yaml": "qwen2_5_vl",
    "qwen2_5_vl_7b.yaml": "qwen2_5_vl",
    "qwen3_vl_4b.yaml": "qwen3_vl",
    "llava_1_5_7b.yaml": "llava",
    "smolvlm2_2b.yaml": "smolvlm",
    "paligemma2_3b.yaml": "paligemma",
    "gemma3_4b.yaml": "gemma3",
    "internvl3_2b.yaml": "internvl",
    "tiny_cpu.yaml": "qwen2_5_vl",
}
SCALE_DOWN = [
    "loop.max_steps=2",
    "loop.max_minutes=null",
    "optim.schedule_by=steps",
    "loop.batch_size=2",
    "loop.grad_accum=1",
    "loop.mixed_precision=no",
    "loop.eval_every=null",
    "loop.save_every=null",
    "data.path=''",
]


def test_every_recipe_is_covered():
    assert sorted(p.name for p in RECIPES.glob("*.yaml")) == sorted(ARCH_OF)


@pytest.mark.parametrize("name", sorted(ARCH_OF))
def test_recipe_trains_a_tiny_model_of_its_architecture(name, records, tmp_path):
    from transformers import AutoProcessor

    recipe = RECIPES / name
    cfg = load_config(recipe)
    assert cfg.data.max_length >= 512 and cfg.output.dir
    arch = ARCH_OF[name]
    tiny_overrides = (
        {} if name != "tiny_cpu.yaml" else {"image_size": 32, "hidden_size": 64, "vision_hidden_size": 32}
    )
    model, processor = build_tiny(arch, **tiny_overrides)
    if cfg.model.name_or_path.startswith("tiny:"):
        assert cfg.model.name_or_path == f"tiny:{arch}"
        build_tiny(arch, **cfg.model.tiny)  # the recipe's own tiny settings build
    else:
        assert model.config.model_type in {"smolvlm", "idefics3"} or model.config.model_type.startswith(
            arch[:5]
        )
    # The recipe's processor options are accepted by this architecture's processor.
    processor.save_pretrained(tmp_path / "proc")
    AutoProcessor.from_pretrained(tmp_path / "proc", **cfg.model.processor)

    small = load_config(recipe, [*SCALE_DOWN, f"output.dir={tmp_path / 'run'}"])
    assert small.finetune == cfg.finetune and small.optim.lr == cfg.optim.lr
    result = train(small, train_dataset=records[:4], model=model, processor=processor)
    assert result.steps == 2 and all(math.isfinite(x) for x in result.losses)
    assert result.final_dir is not None and any(result.final_dir.glob("*.safetensors"))
    if cfg.finetune.method == "lora":
        assert (result.final_dir / "adapter_config.json").is_file()


@pytest.mark.parametrize(
    ("name", "kind", "stage"),
    [
        ("multi_gpu.yaml", "MULTI_GPU", None),
        ("zero2.yaml", "DEEPSPEED", 2),
        ("zero3.yaml", "DEEPSPEED", 3),
        ("fsdp.yaml", "FSDP", None),
    ],
)
def test_accelerate_configs_parse(name, kind, stage):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(RECIPES / "accelerate" / name))
    assert cfg.distributed_type.value == kind and cfg.num_processes >= 1
    if stage is not None:
        assert cfg.deepspeed_config["zero_stage"] == stage
    if kind == "FSDP":
        assert cfg.fsdp_config["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
