"""The fine-tuning loop: Accelerate (devices, mixed precision, accumulation), PEFT LoRA, atomic checkpoints.

`train(config, ...)` is the Python API (the CLI and the demo call it). Outputs under `config.output.dir`:

    metrics.jsonl              one JSON line per optimizer step ({"step", "loss", "lr", ...}) and per eval
    checkpoints/checkpoint-N/  complete checkpoints only: written to `.tmp-checkpoint-N` then renamed
    final/                     the adapter (LoRA) or the full model, with the processor: `from_pretrained`-able
    base/                      the base model, when it has no hub id or folder of its own (tiny models)
    merged/                    the adapter folded into the base model (`output.save_merged: true`)

Resuming (`output.resume: true`, the default) restores model, optimizer, scheduler, RNG states and the
position in the data from the latest complete checkpoint, so the loss trajectory continues unchanged.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from text4seg.protocol.asking import settings_from_records, write_settings

from .config import TrainConfig

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
METRICS_FILE = "metrics.jsonl"

StepCallback = Callable[[dict[str, Any]], "bool | None"]


@dataclass
class TrainResult:
    """What a run did and where it wrote it."""

    output_dir: Path
    final_dir: Path | None
    merged_dir: Path | None
    steps: int
    epochs_completed: float
    losses: list[float] = field(default_factory=list)
    eval_losses: list[tuple[int, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    stopped: str = "max_steps"  # "max_steps" | "epochs" | "time" | "callback"
    seconds: float = 0.0
    resumed_from: Path | None = None
    trainable_parameters: int = 0
    total_parameters: int = 0

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / METRICS_FILE


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


# --------------------------------------------------------------------------------------------- setup


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


def prepare_model(model: Any, config: TrainConfig) -> tuple[Any, dict[str, list[Any]]]:
    """Freeze/unfreeze and wrap the model as the config says; returns it and its parameter groups."""
    from text4seg.models import registry

    ft = config.finetune
    parts = registry.find_parts(model)
    vision_only = [n for n, _ in model.named_parameters() if registry.in_parts(n, parts.vision_tower)]
    projector_names = set(n for n, _ in model.named_parameters() if registry.in_parts(n, parts.projector))
    vision_names = set(vision_only) - projector_names
    if ft.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    if ft.method == "lora":
        from peft import LoraConfig, get_peft_model

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
        model = get_peft_model(model, lora)
    else:
        # Full fine-tuning: language model and projector; the vision tower only with train_vision.
        for name, param in model.named_parameters():
            param.requires_grad = ft.train_vision or name not in vision_names

    groups: dict[str, list[Any]] = {"language": [], "projector": [], "vision": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        plain = name.replace("base_model.model.", "", 1)
        plain = plain.replace(".modules_to_save.default", "").replace(".original_module", "")
        if plain in projector_names or registry.in_parts(plain, parts.projector):
            groups["projector"].append(param)
        elif plain in vision_names or registry.in_parts(plain, parts.vision_tower):
            groups["vision"].append(param)
        else:
            groups["language"].append(param)
    if not any(groups.values()):
        raise ValueError("nothing to train: every parameter is frozen")
    return model, groups


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


def load_datasets(
    config: TrainConfig, train_dataset: Any = None, eval_dataset: Any = None
) -> tuple[Any, Any]:
    """Train/eval datasets from arguments or from the `datasets` folder in `data.path`."""
    d = config.data
    if train_dataset is None:
        if not d.path:
            raise ValueError("no training data: set data.path to a folder written by `text4seg build`")
        from datasets import DatasetDict, load_from_disk

        loaded = load_from_disk(d.path)
        if isinstance(loaded, DatasetDict):
            if d.train_split not in loaded:
                raise ValueError(f"{d.path} has no split {d.train_split!r} (it has {', '.join(loaded)})")
            train_dataset = loaded[d.train_split]
            if eval_dataset is None and d.eval_split and d.eval_split in loaded:
                eval_dataset = loaded[d.eval_split]
        else:
            train_dataset = loaded
    if d.max_train_samples is not None:
        train_dataset = _head(train_dataset, d.max_train_samples)
    if eval_dataset is not None and d.max_eval_samples is not None:
        eval_dataset = _head(eval_dataset, d.max_eval_samples)
    if len(train_dataset) == 0:
        raise ValueError("the training set is empty")
    return train_dataset, eval_dataset


def _head(dataset: Any, n: int) -> Any:
    if hasattr(dataset, "select"):
        return dataset.select(range(min(n, len(dataset))))
    return list(dataset)[:n]


# --------------------------------------------------------------------------------------------- checkpoints


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder counts only once renamed and holding its state file)."""
    root = output_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-") and (p / STATE_FILE).is_file():
            try:
                found.append((int(p.name.split("-", 1)[1]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(found)]


def _trainable_state_hook(accelerator: Any, only_trainable: bool) -> None:
    """Save only trainable tensors in checkpoints of LoRA runs (the frozen base is reloaded, not copied)."""
    if not only_trainable:
        return

    def hook(models: list[Any], weights: list[dict[str, Any]], _output_dir: str) -> None:
        for model, state in zip(models, weights, strict=False):
            keep = {n for n, p in model.named_parameters() if p.requires_grad}
            for key in [k for k in state if k not in keep]:
                del state[key]

    accelerator.register_save_state_pre_hook(hook)


# --------------------------------------------------------------------------------------------- the loop


class _Trainer:
    def __init__(self, config: TrainConfig, callbacks: Sequence[StepCallback]) -> None:
        self.config = config
        self.callbacks = list(callbacks)
        self.out = Path(config.output.dir)

    # -- logging
    def log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.out / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.config.output.report_to:
                numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
                self.accelerator.log(numbers, step=record.get("step"))

    # -- checkpoints
    def save_checkpoint(self, state: dict[str, Any]) -> Path:
        acc = self.accelerator
        step = state["step"]
        root = self.out / CHECKPOINTS
        final = root / f"checkpoint-{step}"
        tmp = root / f".tmp-checkpoint-{step}"
        if acc.is_main_process:
            root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / STATE_FILE).write_text(json.dumps(state))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in complete_checkpoints(self.out)[: -max(1, self.config.loop.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def evaluate(self, model: Any, loader: Any) -> float | None:
        import torch

        from .loss import answer_loss, keeps_logits

        if loader is None:
            return None
        model.eval()
        keep = keeps_logits(model)
        total, count = 0.0, 0
        limit = self.config.loop.eval_batches
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if limit is not None and i >= limit:
                    break
                batch.pop("skipped", None)
                batch.pop("ids", None)
                if "input_ids" not in batch:
                    continue
                loss = answer_loss(model, batch, keep).detach()
                total += float(self.accelerator.reduce(loss, reduction="mean"))
                count += 1
        model.train()
        return total / count if count else None

    def run(self, model: Any, processor: Any, train_ds: Any, eval_ds: Any) -> TrainResult:
        import torch
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed
        from torch.utils.data import DataLoader
        from tqdm.auto import tqdm

        from text4seg.distributed import end_group_at_exit
        from text4seg.models import registry

        from .collate import Collator
        from .loss import answer_loss, keeps_logits

        cfg = self.config
        loop = cfg.loop
        started = time.monotonic()
        _fresh_single_process_state()
        # A trained vision tower may hold layers the model never reads (e.g. LLaVA's last CLIP layer).
        ddp = DistributedDataParallelKwargs(find_unused_parameters=cfg.finetune.train_vision)
        acc = Accelerator(
            kwargs_handlers=[ddp],
            mixed_precision=loop.mixed_precision,
            gradient_accumulation_steps=loop.grad_accum,
            log_with=cfg.output.report_to or None,
            project_dir=str(self.out),
            step_scheduler_with_optimizer=False,
        )
        self.accelerator = acc
        end_group_at_exit()
        set_seed(loop.seed)
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        if cfg.output.report_to:
            acc.init_trackers("text4seg", config=_flat(cfg.to_dict()))

        base_name = getattr(model, "name_or_path", "") or ""
        if cfg.finetune.method == "lora" and not _loadable(base_name):
            # An in-memory model (tiny, or built by the caller): save the untouched base so the adapter has
            # something loadable to sit on.
            base_dir = self.out / "base"
            if acc.is_main_process:
                model.save_pretrained(base_dir, safe_serialization=True)
                processor.save_pretrained(base_dir)
            acc.wait_for_everyone()
            base_name = str(base_dir.resolve())
        model, groups = prepare_model(model, cfg)
        trainable = sum(p.numel() for ps in groups.values() for p in ps)
        total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        model.train()

        collator = Collator(
            processor, max_length=cfg.data.max_length, answer_token_type=registry.answer_token_type(model)
        )
        sampler = EpochSampler(len(train_ds), loop.seed, cfg.data.shuffle)
        train_loader = DataLoader(
            train_ds,
            batch_size=loop.batch_size,
            sampler=sampler,
            collate_fn=collator,
            num_workers=cfg.data.num_workers,
            drop_last=False,
            # Its own generator: creating an iterator then never draws from the global RNG, so a resumed run
            # (which creates one more iterator) keeps the same dropout masks as an uninterrupted one.
            generator=torch.Generator().manual_seed(loop.seed),
        )
        eval_loader = None
        if eval_ds is not None and len(eval_ds):
            eval_loader = DataLoader(
                eval_ds,
                batch_size=loop.batch_size,
                collate_fn=collator,
                shuffle=False,
                generator=torch.Generator().manual_seed(loop.seed),
            )

        optimizer = build_optimizer(groups, cfg)
        per_process_batches = math.ceil(len(train_ds) / loop.batch_size / acc.num_processes)
        steps_per_epoch = max(1, per_process_batches // loop.grad_accum)
        total_steps = loop.max_steps or max(1, math.ceil(steps_per_epoch * loop.epochs))
        time_fraction = None
        if cfg.optim.schedule_by == "time":
            if loop.max_minutes is None:
                raise ValueError("optim.schedule_by=time needs loop.max_minutes")
            budget = loop.max_minutes * 60

            def time_fraction() -> float:
                return (time.monotonic() - started) / budget

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps, time_fraction))
        _trainable_state_hook(
            acc,
            cfg.finetune.method == "lora" and acc.distributed_type.value in ("NO", "MULTI_CPU", "MULTI_GPU"),
        )
        model, optimizer, train_loader, scheduler = acc.prepare(model, optimizer, train_loader, scheduler)
        if eval_loader is not None:
            eval_loader = acc.prepare(eval_loader)

        state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "skipped": [], "losses": []}
        resumed_from = None
        checkpoints = complete_checkpoints(self.out) if cfg.output.resume else []
        if checkpoints:
            resumed_from = checkpoints[-1]
            acc.load_state(str(resumed_from), strict=False)
            state = json.loads((resumed_from / STATE_FILE).read_text())
            acc.print(f"resumed from {resumed_from} (step {state['step']})")
        elif acc.is_main_process and (self.out / METRICS_FILE).exists():
            (self.out / METRICS_FILE).unlink()

        result = TrainResult(
            output_dir=self.out,
            final_dir=None,
            merged_dir=None,
            steps=state["step"],
            epochs_completed=0.0,
            losses=list(state["losses"]),
            skipped=list(state["skipped"]),
            resumed_from=resumed_from,
            trainable_parameters=trainable,
            total_parameters=total,
        )
        stop = None
        # A run bounded by its time budget (schedule_by=time) shows seconds spent, not steps out of a horizon.
        by_time = time_fraction is not None
        bar = tqdm(
            total=round(loop.max_minutes * 60) if by_time else total_steps,
            initial=0 if by_time else state["step"],
            unit="s" if by_time else "it",
            disable=not (loop.progress and acc.is_local_main_process),
            desc="train",
        )
        keep = keeps_logits(model)  # logits only where answer tokens are predicted (text4seg.train.loss)
        micro_losses: list[float] = []
        tokens = 0
        last_batch = None
        step_started = time.monotonic()
        while stop is None:
            sampler.set_epoch(state["epoch"])
            loader = train_loader
            whole_epoch = state["batches_in_epoch"] == 0
            useful = 0
            if state["batches_in_epoch"]:
                loader = acc.skip_first_batches(train_loader, state["batches_in_epoch"])
            if hasattr(loader, "set_epoch"):
                # Accelerate's loaders pass their own iteration count to the sampler on __iter__: align it.
                loader.set_epoch(state["epoch"])
            for batch in loader:
                state["batches_in_epoch"] += 1
                skipped = batch.pop("skipped", [])
                batch.pop("ids", None)
                if skipped:
                    state["skipped"].extend(skipped)
                    self.log({"step": state["step"], "skipped": skipped})
                empty = "input_ids" not in batch
                useful += not empty
                if empty and last_batch is None:
                    continue
                with acc.accumulate(model):
                    raw_loss = answer_loss(model, last_batch if empty else batch, keep)
                    loss = raw_loss * 0.0 if empty else raw_loss
                    acc.backward(loss)
                    grad_norm = None
                    if acc.sync_gradients and cfg.optim.max_grad_norm:
                        grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
                    optimizer.step()
                    if acc.sync_gradients:
                        scheduler.step()
                    optimizer.zero_grad()
                if not empty:
                    last_batch = batch
                    micro_losses.append(float(acc.reduce(raw_loss.detach(), reduction="mean")))
                    tokens += int((batch["labels"] != -100).sum())
                if not acc.sync_gradients:
                    continue
                state["step"] += 1
                step_loss = sum(micro_losses) / len(micro_losses) if micro_losses else float("nan")
                state["losses"].append(step_loss)
                now = time.monotonic()
                record = {
                    "step": state["step"],
                    "epoch": state["epoch"] + state["batches_in_epoch"] / max(1, per_process_batches),
                    "loss": step_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "answer_tokens": tokens,
                    "step_seconds": round(now - step_started, 4),
                    "elapsed": round(now - started, 3),
                }
                micro_losses, tokens, step_started = [], 0, now
                if state["step"] % max(1, loop.log_every) == 0 or state["step"] == total_steps:
                    self.log(record)
                if by_time:
                    bar.update(max(0, min(bar.total, int(now - started)) - bar.n))
                    bar.set_postfix(step=state["step"], loss=f"{step_loss:.4f}")
                else:
                    bar.update(1)
                    bar.set_postfix(loss=f"{step_loss:.4f}")
                if loop.eval_every and state["step"] % loop.eval_every == 0:
                    ev = self.evaluate(model, eval_loader)
                    if ev is not None:
                        result.eval_losses.append((state["step"], ev))
                        self.log({"step": state["step"], "eval_loss": ev})
                for callback in self.callbacks:
                    if callback(dict(record)):
                        stop = "callback"
                if state["step"] >= total_steps:
                    stop = stop or ("max_steps" if loop.max_steps else "epochs")
                elif loop.max_minutes is not None and (now - started) / 60 >= loop.max_minutes:
                    stop = stop or "time"
                if loop.save_every and state["step"] % loop.save_every == 0 and stop is None:
                    self.save_checkpoint(state)
                if stop:
                    break
            else:
                if whole_epoch and not useful:
                    raise ValueError(
                        f"every training record was skipped as longer than data.max_length={cfg.data.max_length} "
                        f"tokens (e.g. {', '.join(state['skipped'][:3])}); raise data.max_length"
                    )
                state["epoch"] += 1
                state["batches_in_epoch"] = 0
        bar.close()
        if loop.save_every or stop == "time":
            self.save_checkpoint(state)
        if eval_loader is not None and not (loop.eval_every and state["step"] % loop.eval_every == 0):
            ev = self.evaluate(model, eval_loader)
            if ev is not None:
                result.eval_losses.append((state["step"], ev))
                self.log({"step": state["step"], "eval_loss": ev})
        result.final_dir, result.merged_dir = self.save_final(
            model, processor, base_name, settings_from_records(train_ds)
        )
        result.steps = state["step"]
        result.epochs_completed = state["epoch"] + state["batches_in_epoch"] / max(1, per_process_batches)
        result.losses = list(state["losses"])
        result.skipped = list(state["skipped"])
        result.stopped = stop or "max_steps"
        result.seconds = time.monotonic() - started
        self.log(
            {
                "step": state["step"],
                "event": "end",
                "stopped": result.stopped,
                "skipped_total": len(result.skipped),
            }
        )
        if cfg.output.report_to:
            acc.end_training()
        return result

    def save_final(
        self, model: Any, processor: Any, base_name: str, settings: dict[str, Any] | None = None
    ) -> tuple[Path, Path | None]:
        """Write the adapter (or full model) + processor to final/, and merged/ on request, each with the
        segmenter settings the training records imply (text4seg.json: grid, fixed target label, …)."""
        acc = self.accelerator
        acc.wait_for_everyone()
        unwrapped = acc.unwrap_model(model)
        state_dict = acc.get_state_dict(model)  # gathers shards under ZeRO-3/FSDP (collective: all processes)
        final = self.out / "final"
        merged_dir = None
        is_peft = hasattr(unwrapped, "peft_config")
        if acc.is_main_process:
            if is_peft:
                for peft_cfg in unwrapped.peft_config.values():
                    peft_cfg.base_model_name_or_path = base_name
            unwrapped.save_pretrained(final, state_dict=state_dict, safe_serialization=True)
            processor.save_pretrained(final)
            if settings:
                write_settings(final, settings)
            if self.config.output.save_merged and is_peft:
                import copy

                merged = copy.deepcopy(unwrapped).merge_and_unload()
                merged_dir = self.out / "merged"
                merged.save_pretrained(merged_dir, safe_serialization=True)
                processor.save_pretrained(merged_dir)
                if settings:
                    write_settings(merged_dir, settings)
        acc.wait_for_everyone()
        return final, merged_dir


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


def _loadable(name: str) -> bool:
    """Whether `name` is a local model folder or looks like a hub id (then the adapter can point at it)."""
    if not name:
        return False
    if Path(name).is_dir():
        return (Path(name) / "config.json").is_file()
    return name.count("/") == 1 and not name.startswith((".", "/"))


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


def train(
    config: TrainConfig,
    *,
    train_dataset: Any = None,
    eval_dataset: Any = None,
    model: Any = None,
    processor: Any = None,
    callbacks: Sequence[StepCallback] = (),
) -> TrainResult:
    """Fine-tune as `config` says and return what happened.

    `train_dataset` / `eval_dataset` (a `datasets.Dataset` or a list of records in the docs/RECORDS.md
    schema) replace `data.path`; `model` + `processor` replace `model.name_or_path`. Each callback gets
    the log record of every optimizer step and may return True to stop (the run then saves as usual).
    """
    config.validate()
    if (model is None) != (processor is None):
        raise ValueError("pass both model and processor, or neither")
    if model is None:
        model, processor = build_model(config)
    train_ds, eval_ds = load_datasets(config, train_dataset, eval_dataset)
    return _Trainer(config, callbacks).run(model, processor, train_ds, eval_ds)
