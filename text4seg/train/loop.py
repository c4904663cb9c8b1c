"""The step loop: micro-batches with accumulation, one log record per optimizer step, evaluation, stopping
rules (steps, epochs, wall clock, callbacks), periodic checkpoints, and a refusal to go on past a loss
that is not finite.

`Loop(run, callbacks).train(state, result)` continues from `state` (fresh or resumed) until a stopping
rule fires; `text4seg.train.trainer.train` sets up the `Run` it drives.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clock import RunClock
from .collate import IGNORE_INDEX
from .config import TrainConfig

METRICS_FILE = "metrics.jsonl"

StepCallback = Callable[[dict[str, Any]], "bool | None"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stopped without saving that step."""

    def __init__(self, step: int, loss: float, checkpoint: Path | None) -> None:
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was saved"
        super().__init__(
            f"the training loss is {loss} at step {step}: stopped without saving final/ ({kept}); "
            "lower optim.lr, set optim.max_grad_norm or loop.mixed_precision=bf16 (fp16 overflows)"
        )
        self.step, self.loss, self.checkpoint = step, loss, checkpoint


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
    source_eval_losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # data.sources
    skipped: list[str] = field(default_factory=list)
    stopped: str = "max_steps"  # "max_steps" | "epochs" | "time" | "callback"
    seconds: float = 0.0
    resumed_from: Path | None = None
    trainable_parameters: int = 0
    total_parameters: int = 0

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / METRICS_FILE


def fresh_state() -> dict[str, Any]:
    """The trainer state of a run that has not taken a step (saved as trainer_state.json)."""
    return {"step": 0, "epoch": 0, "batches_in_epoch": 0, "skipped": [], "losses": []}


@dataclass
class Run:
    """Everything the loop drives, as set up by `text4seg.train.trainer`."""

    config: TrainConfig
    out: Path
    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    eval_loader: Any
    sampler: Any
    per_process_batches: int
    total_steps: int
    started: float
    by_time: bool  # a run bounded by its time budget (schedule_by=time) shows seconds, not steps
    save: Callable[[dict[str, Any]], Path]  # writes a checkpoint of a state (every process)
    clock: RunClock  # the elapsed time every process agrees on (read once per optimizer step)
    processor: Any = None
    base_name: str = ""  # what an adapter of the run names as its base model
    asking: Any = None  # text4seg.protocol.asking.Asking written beside the model
    parameters: tuple[int, int] = (0, 0)  # (trainable, total)


class Loop:
    """The optimizer steps of one run."""

    def __init__(self, run: Run, callbacks: Sequence[StepCallback] = ()) -> None:
        from .loss import keeps_logits

        self.run, self.callbacks = run, list(callbacks)
        self.keep = keeps_logits(run.model)  # logits only where answer tokens are predicted (train.loss)
        self.micro_losses: list[float] = []
        self.tokens = 0
        self.last_batch: dict[str, Any] | None = None
        self.grad_norm: Any = None
        self.step_started = time.monotonic()
        self.last_checkpoint: Path | None = None  # the newest checkpoint written or resumed from
        self.source_losses: dict[str, float] = {}  # the last eval's loss per source (data.sources)
        self.stream_base = 0  # records of the epoch read before this iteration of a stream began

    # -- logging and evaluation -------------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl (and the trackers of `output.report_to`) on the main process."""
        acc = self.run.accelerator
        if acc.is_main_process:
            with open(self.run.out / METRICS_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.run.config.output.report_to:
                numbers = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "step"}
                acc.log(numbers, step=record.get("step"))

    def evaluate(self) -> float | None:
        """Mean answer loss over at most `loop.eval_batches` batches of each eval set (None without eval
        data); with several sources (`data.sources`) each one's mean is kept in `self.source_losses`."""
        loaders = self.run.eval_loader
        if loaders is None:
            return None
        named = loaders if isinstance(loaders, dict) else {"": loaders}
        self.run.model.eval()
        sums = {name: self._loss_sum(loader) for name, loader in named.items()}
        self.run.model.train()
        self.source_losses = {name: t / c for name, (t, c) in sums.items() if name and c}
        total, count = sum(t for t, _ in sums.values()), sum(c for _, c in sums.values())
        return total / count if count else None

    def _loss_sum(self, loader: Any) -> tuple[float, int]:
        """(sum of batch losses, batches) over at most `loop.eval_batches` batches of one eval loader."""
        import torch

        from .loss import answer_loss

        run, limit = self.run, self.run.config.loop.eval_batches
        total, count = 0.0, 0
        with torch.no_grad():
            for i, batch in enumerate(loader):
                if limit is not None and i >= limit:
                    break
                batch.pop("skipped", None)
                batch.pop("ids", None)
                if "input_ids" not in batch:
                    continue
                loss = answer_loss(run.model, batch, self.keep).detach()
                total += float(run.accelerator.reduce(loss, reduction="mean"))
                count += 1
        return total, count

    def evaluate_and_log(self, state: dict[str, Any], result: TrainResult) -> None:
        """Evaluate; log `eval_loss` (all eval records) and `eval_loss/<source>` per source."""
        loss = self.evaluate()
        if loss is not None:
            result.eval_losses.append((state["step"], loss))
            per_source = {f"eval_loss/{name}": value for name, value in self.source_losses.items()}
            for name, value in self.source_losses.items():
                result.source_eval_losses.setdefault(name, []).append((state["step"], value))
            self.log({"step": state["step"], "eval_loss": loss, **per_source})

    # -- the loop ---------------------------------------------------------------------------------------
    def train(self, state: dict[str, Any], result: TrainResult, bar: Any) -> str:
        """Take optimizer steps from `state` on until a stopping rule fires; returns which one."""
        stop = None
        while stop is None:
            stop = self._epoch(state, result, bar)
        return stop

    def _epoch_loader(self, state: dict[str, Any]) -> Any:
        """The train loader positioned at `state` (resumed mid-epoch: its first batches skipped, or for a
        stream its saved `state_dict` restored)."""
        run = self.run
        run.sampler.set_epoch(state["epoch"])
        loader = run.train_loader
        if self._streaming():
            self.stream_base = state.setdefault("stream_records", 0)
            if state.get("stream"):
                run.sampler.resume_from(state["stream"])
        elif state["batches_in_epoch"]:
            loader = run.accelerator.skip_first_batches(run.train_loader, state["batches_in_epoch"])
        if hasattr(loader, "set_epoch"):
            # Accelerate's loaders pass their own iteration count to the sampler on __iter__: align it.
            loader.set_epoch(state["epoch"])
        return loader

    def _streaming(self) -> bool:
        return hasattr(self.run.sampler, "state_after")

    def _mark_stream(self, state: dict[str, Any], records: int) -> None:
        """Where the records consumed so far end in the stream (saved with the next checkpoint)."""
        if not self._streaming():
            return
        state["stream_records"] = (
            state.get("stream_records", 0) + records * self.run.accelerator.num_processes
        )
        position = self.run.sampler.state_after(state["stream_records"] - self.stream_base)
        if position is not None:
            state["stream"] = position

    def _epoch(self, state: dict[str, Any], result: TrainResult, bar: Any) -> str | None:
        """The rest of the current epoch; the stopping rule that fired, or None at the epoch's end."""
        whole_epoch, useful = state["batches_in_epoch"] == 0, 0
        for batch in self._epoch_loader(state):
            state["batches_in_epoch"] += 1
            took = self._micro_step(batch, state)
            useful += took is True
            if took is None or not self.run.accelerator.sync_gradients:
                continue
            stop = self._after_step(state, result, bar)
            if stop:
                return stop
        if whole_epoch and not useful:
            raise ValueError(
                f"every training record was skipped as longer than data.max_length={self.run.config.data.max_length} "
                f"tokens (e.g. {', '.join(state['skipped'][:3])}); raise data.max_length"
            )
        state["epoch"] += 1
        state["batches_in_epoch"] = 0
        if self._streaming():
            state["stream_records"], state["stream"] = 0, None
        return None

    def _micro_step(self, batch: dict[str, Any], state: dict[str, Any]) -> bool | None:
        """Forward/backward of one batch (optimizer step when accumulation is complete); whether it had data.

        A batch whose records were all skipped still takes part (a zero loss on the last real batch), so
        every process steps the same number of times; before any real batch it is passed over (None).
        """
        from .loss import answer_loss

        run, acc = self.run, self.run.accelerator
        skipped = batch.pop("skipped", [])
        self._mark_stream(state, len(batch.pop("ids", None) or []) + len(skipped))
        if skipped:
            state["skipped"].extend(skipped)
            self.log({"step": state["step"], "skipped": skipped})
        empty = "input_ids" not in batch
        if empty and self.last_batch is None:
            return None
        with acc.accumulate(run.model):
            raw_loss = answer_loss(run.model, self.last_batch if empty else batch, self.keep)
            acc.backward(raw_loss * 0.0 if empty else raw_loss)
            self.grad_norm = None
            if acc.sync_gradients and run.config.optim.max_grad_norm:
                self.grad_norm = acc.clip_grad_norm_(run.model.parameters(), run.config.optim.max_grad_norm)
            run.optimizer.step()
            if acc.sync_gradients:
                run.clock.tick()  # the same reading on every process
                run.scheduler.step()
            run.optimizer.zero_grad()
        if not empty:
            self.last_batch = batch
            self.micro_losses.append(float(acc.reduce(raw_loss.detach(), reduction="mean")))
            self.tokens += int((batch["labels"] != IGNORE_INDEX).sum())
        return not empty

    def _step_record(self, state: dict[str, Any]) -> dict[str, Any]:
        """The log record of the optimizer step just taken (resets the per-step counters)."""
        run, now = self.run, time.monotonic()
        losses = self.micro_losses
        grad_norm = self.grad_norm
        record = {
            "step": state["step"],
            "epoch": state["epoch"] + state["batches_in_epoch"] / max(1, run.per_process_batches),
            "loss": sum(losses) / len(losses) if losses else float("nan"),
            "lr": run.scheduler.get_last_lr()[0],
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "answer_tokens": self.tokens,
            "step_seconds": round(now - self.step_started, 4),
            "elapsed": round(run.clock.elapsed, 3),
        }
        self.micro_losses, self.tokens, self.step_started = [], 0, now
        return record

    def _check_finite(self, state: dict[str, Any], loss: float) -> None:
        if math.isfinite(loss):
            return
        self.log({"step": state["step"], "event": "non_finite_loss", "loss": str(loss)})
        raise NonFiniteLossError(state["step"], loss, self.last_checkpoint)

    def _show(self, bar: Any, record: dict[str, Any]) -> None:
        if self.run.by_time:
            bar.update(max(0, min(bar.total, int(record["elapsed"])) - bar.n))
            bar.set_postfix(step=record["step"], loss=f"{record['loss']:.4f}")
        else:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}")

    def _stop_reason(self, record: dict[str, Any]) -> str | None:
        loop = self.run.config.loop
        stop = "callback" if any([bool(cb(dict(record))) for cb in self.callbacks]) else None
        if record["step"] >= self.run.total_steps:
            return stop or ("max_steps" if loop.max_steps else "epochs")
        if loop.max_minutes is not None and self.run.clock.elapsed / 60 >= loop.max_minutes:
            return stop or "time"
        return stop

    def _after_step(self, state: dict[str, Any], result: TrainResult, bar: Any) -> str | None:
        """Bookkeeping of an optimizer step: log, progress, eval, callbacks, checkpoint; the stop rule."""
        loop = self.run.config.loop
        state["step"] += 1
        real = bool(self.micro_losses)  # a step of skipped batches only logs a NaN loss, as before
        record = self._step_record(state)
        if real:
            self._check_finite(state, record["loss"])
        state["losses"].append(record["loss"])
        if state["step"] % max(1, loop.log_every) == 0 or state["step"] == self.run.total_steps:
            self.log(record)
        self._show(bar, record)
        if loop.eval_every and state["step"] % loop.eval_every == 0:
            self.evaluate_and_log(state, result)
        stop = self._stop_reason(record)
        if loop.save_every and state["step"] % loop.save_every == 0 and stop is None:
            self.last_checkpoint = self.run.save(state)
        return stop
