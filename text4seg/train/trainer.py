"""Fine-tuning, room by room: `train(config, ...)` is the Python API (the CLI calls it).

The rooms, each with one job: `train.data` (datasets checked before any model is loaded, loaders, run
length, the settings the data implies), `train.sources` (several datasets mixed or streamed), `train.setup`
(model, PEFT, optimizer, schedule, Accelerator), `train.checkpoints` (atomic save, resume from the newest
intact one), `train.loop` (the steps, logging, eval, stopping) and `train.final` (final/ and merged/ with
text4seg.json). Outputs under `output.dir`:

    metrics.jsonl              one JSON line per optimizer step ({"step", "loss", "lr", ...}) and per eval
    checkpoints/checkpoint-N/  complete checkpoints only: written to `.tmp-checkpoint-N` then renamed; each
                               also loadable as a model (adapter or config, processor, text4seg.json)
    final/                     the adapter (LoRA) or the full model, with the processor: `from_pretrained`-able
    base/                      the base model, when it has no hub id or folder of its own (tiny models)
    merged/                    the adapter folded into the base model (`output.save_merged: true`)

Resuming (`output.resume: true`, the default) restores model, optimizer, scheduler, RNG states and the
position in the data from the newest intact checkpoint, so the loss trajectory continues unchanged. A loss
that is not finite stops the run with `NonFiniteLossError` (nothing saved for that step, no final/).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from .checkpoints import (
    CHECKPOINTS,
    STATE_FILE,
    CheckpointError,
    complete_checkpoints,
    resume,
    save_checkpoint,
    trainable_state_hook,
)
from .clock import RunClock
from .config import TrainConfig
from .data import DataError, EpochSampler, build_loaders, is_stream, load_data, load_datasets, run_length
from .final import export_model, save_final
from .loop import METRICS_FILE, Loop, NonFiniteLossError, Run, StepCallback, TrainResult, fresh_state
from .setup import (
    adapter_base,
    build_model,
    build_optimizer,
    build_scheduler,
    lr_lambda,
    make_accelerator,
    prepare_model,
    time_fraction_since,
)

__all__ = [
    "CHECKPOINTS",
    "METRICS_FILE",
    "STATE_FILE",
    "CheckpointError",
    "DataError",
    "EpochSampler",
    "NonFiniteLossError",
    "StepCallback",
    "TrainResult",
    "build_model",
    "build_optimizer",
    "complete_checkpoints",
    "load_datasets",
    "lr_lambda",
    "prepare_model",
    "train",
]


def _setup(config: TrainConfig, model: Any, processor: Any, data: tuple[Any, Any], asking: Any) -> Run:
    """Accelerator, model (wrapped), loaders, optimizer and schedule, all prepared by Accelerate."""
    from text4seg.models import registry

    from .collate import Collator

    out, started = Path(config.output.dir), time.monotonic()
    acc = make_accelerator(config, out)
    clock = RunClock(acc, started)
    base_name = adapter_base(acc, model, processor, config, out)
    model, groups = prepare_model(model, config)
    model.train()
    collator = Collator(
        processor, max_length=config.data.max_length, answer_token_type=registry.answer_token_type(model)
    )
    train_loader, eval_loader, sampler = build_loaders(config, collator, *data)
    size = None if is_stream(data[0]) else len(data[0])
    per_process_batches, total_steps = run_length(config, size, acc.num_processes)
    optimizer = build_optimizer(groups, config)
    time_fraction = time_fraction_since(config, clock)
    scheduler = build_scheduler(optimizer, config, total_steps, time_fraction)
    lora = config.finetune.method == "lora"
    trainable_state_hook(acc, lora and acc.distributed_type.value in ("NO", "MULTI_CPU", "MULTI_GPU"))
    model, optimizer, train_loader, scheduler = acc.prepare(model, optimizer, train_loader, scheduler)
    if isinstance(eval_loader, dict):
        eval_loader = {name: acc.prepare(loader) for name, loader in eval_loader.items()}
    elif eval_loader is not None:
        eval_loader = acc.prepare(eval_loader)
    # a checkpoint is also a model folder: the adapter, or the config beside Accelerate's full weights
    export = partial(export_model, acc, model, processor, base_name, asking, weights=False)
    save = partial(save_checkpoint, acc, out, keep=config.loop.keep_checkpoints, export=export)
    return Run(
        config=config, out=out, accelerator=acc, model=model, optimizer=optimizer, scheduler=scheduler,
        train_loader=train_loader, eval_loader=eval_loader, sampler=sampler,
        per_process_batches=per_process_batches, total_steps=total_steps, started=started, clock=clock,
        by_time=time_fraction is not None, save=save, processor=processor, base_name=base_name,
        asking=asking, parameters=(sum(p.numel() for ps in groups.values() for p in ps), _count(model)),
    )  # fmt: skip


def _count(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _start(run: Run) -> tuple[dict[str, Any], Path | None]:
    """The state to continue from: the newest intact checkpoint's, or a fresh one (metrics.jsonl restarted)."""
    state, resumed_from = resume(run.accelerator, run.out) if run.config.output.resume else (None, None)
    if state is not None:
        run.accelerator.print(f"resumed from {resumed_from} (step {state['step']})")
        return state, resumed_from
    if run.accelerator.is_main_process and (run.out / METRICS_FILE).exists():
        (run.out / METRICS_FILE).unlink()
    return fresh_state(), None


def _progress_bar(run: Run, state: dict[str, Any]) -> Any:
    from tqdm.auto import tqdm

    loop = run.config.loop
    return tqdm(
        total=round(loop.max_minutes * 60) if run.by_time else run.total_steps,
        initial=0 if run.by_time else state["step"],
        unit="s" if run.by_time else "it",
        disable=not (loop.progress and run.accelerator.is_local_main_process),
        desc="train",
    )


def _finish(run: Run, loop: Loop, state: dict[str, Any], result: TrainResult, stop: str) -> TrainResult:
    """The last checkpoint and eval, final/ (and merged/), the result and the end record."""
    cfg = run.config
    if cfg.loop.save_every or stop == "time":
        run.save(state)
    if run.eval_loader is not None and not (cfg.loop.eval_every and state["step"] % cfg.loop.eval_every == 0):
        loop.evaluate_and_log(state, result)
    result.final_dir, result.merged_dir = save_final(
        run.accelerator, run.model, run.processor, run.base_name, run.asking, run.out, cfg.output.save_merged
    )
    result.steps = state["step"]
    result.epochs_completed = state["epoch"] + state["batches_in_epoch"] / max(1, run.per_process_batches)
    result.losses, result.skipped = list(state["losses"]), list(state["skipped"])
    result.stopped, result.seconds = stop, time.monotonic() - run.started
    loop.log({"step": state["step"], "event": "end", "stopped": stop, "skipped_total": len(result.skipped)})
    if cfg.output.report_to:
        run.accelerator.end_training()
    return result


def _run(run: Run, callbacks: Sequence[StepCallback]) -> TrainResult:
    state, resumed_from = _start(run)
    trainable, total = run.parameters
    result = TrainResult(
        output_dir=run.out, final_dir=None, merged_dir=None, steps=state["step"], epochs_completed=0.0,
        losses=list(state["losses"]), skipped=list(state["skipped"]), resumed_from=resumed_from,
        trainable_parameters=trainable, total_parameters=total,
    )  # fmt: skip
    loop = Loop(run, callbacks)
    loop.last_checkpoint = resumed_from
    bar = _progress_bar(run, state)
    try:
        stop = loop.train(state, result, bar)
    finally:
        bar.close()
    return _finish(run, loop, state, result, stop)


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
    schema) replace `data.path` / `data.sources`; `model` + `processor` replace `model.name_or_path`. Each callback gets
    the log record of every optimizer step and may return True to stop (the run then saves as usual).
    The data is checked (DataError) before a model is loaded; a loss that is not finite raises
    NonFiniteLossError; an unusable resume raises CheckpointError.
    """
    config.validate()
    if (model is None) != (processor is None):
        raise ValueError("pass both model and processor, or neither")
    train_ds, eval_ds, asking = load_data(config, train_dataset, eval_dataset)
    if model is None:
        model, processor = build_model(config)
    return _run(_setup(config, model, processor, (train_ds, eval_ds), asking), callbacks)
