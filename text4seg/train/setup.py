"""Setting a run up: the model (loaded or tiny), what is trained (PEFT LoRA or full), the optimizer and the
learning-rate schedule, and the Accelerator that runs it all.

Each function does one of these; `text4seg.train.trainer` calls them in order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from text4seg.models.unwrap import base_parameter_name

from .clock import RunClock
from .config import TrainConfig

PARTS = ("language", "projector", "vision")
"""The parameter groups of a run, each with its own learning rate."""


# -- the model ---------------------------------------------------------------------------------------
def build_model(config: TrainConfig) -> tuple[Any, Any]:
    """The model and processor a config names (`tiny:<arch>` builds a random tiny model)."""
    name = config.model.name_or_path
    if not name:
        raise ValueError("model.name_or_path is empty: name a hub id, a folder or tiny:<arch>")
    if name.startswith("tiny:"):
        from text4seg.models.tiny import build_tiny

        return build_tiny(name.split(":", 1)[1], **config.model.tiny)
    from text4seg.models.loading import load_model_and_processor

    return load_model_and_processor(
        name,
        dtype=config.model.dtype,
        attn_implementation=config.model.attn_implementation,
        trust_remote_code=config.model.trust_remote_code,
        processor_kwargs=config.model.processor,
    )


def _expand_lists(model: Any, names: list[str]) -> list[str]:
    """Replace ModuleList names by their items (PEFT cannot wrap a ModuleList as a module to save)."""
    import torch

    modules = dict(model.named_modules())
    out = []
    for name in names:
        mod = modules[name]
        if isinstance(mod, torch.nn.ModuleList):
            out.extend(f"{name}.{i}" for i in range(len(mod)))
        else:
            out.append(name)
    return out


def _enable_gradient_checkpointing(model: Any) -> None:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()


def _wrap_lora(model: Any, config: TrainConfig, parts: Any) -> Any:
    """The model under a PEFT LoRA adapter; the projector/vision tower trained whole when asked."""
    from peft import LoraConfig, get_peft_model

    ft = config.finetune
    target = parts.lora_target_regex(model) if ft.lora_target == "language_model" else ft.lora_target
    to_save: list[str] = []
    if ft.train_projector:
        to_save += _expand_lists(model, parts.projector)
    if ft.train_vision:
        to_save += [t for t in parts.vision_tower if t not in to_save]
    lora = LoraConfig(
        r=ft.lora_r,
        lora_alpha=ft.lora_alpha,
        lora_dropout=ft.lora_dropout,
        target_modules=target,
        modules_to_save=to_save or None,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def _part_names(model: Any, parts: Any) -> tuple[set[str], set[str]]:
    """(projector parameter names, vision-tower parameter names without the projector's)."""
    from text4seg.models import registry

    names = [n for n, _ in model.named_parameters()]
    projector = {n for n in names if registry.in_parts(n, parts.projector)}
    vision = {n for n in names if registry.in_parts(n, parts.vision_tower)} - projector
    return projector, vision


def _parameter_groups(model: Any, parts: Any, projector: set[str], vision: set[str]) -> dict[str, list[Any]]:
    """The trainable parameters by part (names read under PEFT's prefixes)."""
    from text4seg.models import registry

    groups: dict[str, list[Any]] = {part: [] for part in PARTS}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        plain = base_parameter_name(name)
        if plain in projector or registry.in_parts(plain, parts.projector):
            groups["projector"].append(param)
        elif plain in vision or registry.in_parts(plain, parts.vision_tower):
            groups["vision"].append(param)
        else:
            groups["language"].append(param)
    if not any(groups.values()):
        raise ValueError("nothing to train: every parameter is frozen")
    return groups


def prepare_model(model: Any, config: TrainConfig) -> tuple[Any, dict[str, list[Any]]]:
    """Freeze/unfreeze and wrap the model as the config says; returns it and its parameter groups."""
    from text4seg.models import registry

    ft = config.finetune
    parts = registry.find_parts(model)
    projector, vision = _part_names(model, parts)
    if ft.gradient_checkpointing:
        _enable_gradient_checkpointing(model)
    if ft.method == "lora":
        model = _wrap_lora(model, config, parts)
    else:  # full fine-tuning: language model and projector; the vision tower only with train_vision
        for name, param in model.named_parameters():
            param.requires_grad = ft.train_vision or name not in vision
    return model, _parameter_groups(model, parts, projector, vision)


# -- optimizer and schedule -------------------------------------------------------------------------
def build_optimizer(groups: dict[str, list[Any]], config: TrainConfig) -> Any:
    """AdamW with per-part learning rates; no weight decay on biases and norms (1-D tensors)."""
    import torch

    o, ft = config.optim, config.finetune
    lrs = {"language": o.lr, "projector": ft.projector_lr or o.lr, "vision": ft.vision_lr or o.lr}
    param_groups = []
    for part, params in groups.items():
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        for ps, wd in ((decay, o.weight_decay), (no_decay, 0.0)):
            if ps:
                param_groups.append({"params": ps, "lr": lrs[part], "weight_decay": wd, "name": part})
    return torch.optim.AdamW(param_groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps)


def lr_lambda(
    config: TrainConfig, total_steps: int, time_fraction: Callable[[], float] | None = None
) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step `s` (warmup, then cosine/linear/constant).

    With `time_fraction` (schedule by wall clock), the decay follows the spent fraction of `loop.max_minutes`
    instead of the step count; warmup still counts steps.
    """
    o = config.optim
    warmup = o.warmup_steps or int(o.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / (warmup + 1)
        if o.scheduler == "constant":
            return 1.0
        if time_fraction is not None:
            progress = min(1.0, max(0.0, time_fraction()))
        else:
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        shape = 0.5 * (1 + math.cos(math.pi * progress)) if o.scheduler == "cosine" else 1 - progress
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return factor


def time_fraction_since(config: TrainConfig, clock: RunClock) -> Callable[[], float] | None:
    """The spent fraction of `loop.max_minutes` at the clock's last tick (for `optim.schedule_by: time`),
    else None; every process reads the same fraction (`train.clock`)."""
    if config.optim.schedule_by != "time":
        return None
    if config.loop.max_minutes is None:
        raise ValueError("optim.schedule_by=time needs loop.max_minutes")
    budget = config.loop.max_minutes * 60
    return lambda: clock.elapsed / budget


def build_scheduler(
    optimizer: Any, config: TrainConfig, total_steps: int, time_fraction: Callable[[], float] | None
) -> Any:
    """The LambdaLR of `lr_lambda`."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config, total_steps, time_fraction))


# -- the accelerator --------------------------------------------------------------------------------
def _fresh_single_process_state() -> None:
    """Forget Accelerate's process-wide state between runs of one single-process program.

    Accelerate keeps mixed precision etc. in a singleton, so a second `train()` in the same Python process
    with another `loop.mixed_precision` would fail. Under a launcher (WORLD_SIZE > 1) nothing is reset.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return
    from accelerate.state import AcceleratorState, GradientState

    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, int | float | str | bool):
            out[key] = v
        else:
            out[key] = str(v)
    return out


def make_accelerator(config: TrainConfig, out: Path) -> Any:
    """The run's Accelerator (precision, accumulation, trackers), seeded, with out/config.json written."""
    import json

    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed

    from text4seg.distributed import end_group_at_exit

    _fresh_single_process_state()
    # A trained vision tower may hold layers the model never reads (e.g. LLaVA's last CLIP layer).
    ddp = DistributedDataParallelKwargs(find_unused_parameters=config.finetune.train_vision)
    acc = Accelerator(
        kwargs_handlers=[ddp],
        mixed_precision=config.loop.mixed_precision,
        gradient_accumulation_steps=config.loop.grad_accum,
        log_with=config.output.report_to or None,
        project_dir=str(out),
        step_scheduler_with_optimizer=False,
        # every process reads its own batches, streams included: dispatching (Accelerate's default for
        # an IterableDataset) concatenates and slices batches, which breaks image tensors
        dataloader_config=DataLoaderConfiguration(dispatch_batches=False),
    )
    end_group_at_exit()
    set_seed(config.loop.seed)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    if config.output.report_to:
        acc.init_trackers("text4seg", config=_flat(config.to_dict()))
    return acc


def _loadable(name: str) -> bool:
    """Whether `name` is a local model folder or looks like a hub id (then the adapter can point at it)."""
    if not name:
        return False
    if Path(name).is_dir():
        return (Path(name) / "config.json").is_file()
    return name.count("/") == 1 and not name.startswith((".", "/"))


def adapter_base(acc: Any, model: Any, processor: Any, config: TrainConfig, out: Path) -> str:
    """What an adapter of this run names as its base model.

    An in-memory model of a LoRA run (tiny, or built by the caller) is saved untouched to out/base/ first,
    so the adapter has something loadable to sit on.
    """
    name = getattr(model, "name_or_path", "") or ""
    if config.finetune.method != "lora" or _loadable(name):
        return name
    base_dir = out / "base"
    if acc.is_main_process:
        model.save_pretrained(base_dir, safe_serialization=True)
        processor.save_pretrained(base_dir)
    acc.wait_for_everyone()
    return str(base_dir.resolve())
