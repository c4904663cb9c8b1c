"""Checkpoints: written atomically, resumed from the newest intact one.

`checkpoints/checkpoint-N/` holds Accelerate's state (model or trainable weights, optimizer, scheduler, RNG
states), `trainer_state.json` (step, epoch, position in the epoch, losses so far) and what makes it usable
as a model on its own (`export`, see `text4seg.train.final.export_model`): for a LoRA run an adapter
(adapter_config.json + adapter_model.safetensors), for a full fine-tune the model's config beside
Accelerate's model.safetensors; the processor; and text4seg.json. It is written to `.tmp-checkpoint-N`
and renamed only when complete, so a killed run never leaves a half-written `checkpoint-N`.

Resuming tries the newest complete checkpoint first; a broken one (truncated weights, unreadable optimizer
state, an empty or garbled trainer_state.json) is reported with a `BrokenCheckpointWarning` naming the
file, and the next older one is tried; when none is intact, `CheckpointError` names the broken files.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
_STATE_TYPES = {"step": int, "epoch": int, "batches_in_epoch": int, "skipped": list, "losses": list}


class CheckpointError(RuntimeError):
    """No checkpoint to resume from is intact (the message names each broken file and why)."""


class BrokenCheckpointWarning(UserWarning):
    """A checkpoint could not be resumed from; an older one is used instead."""


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first (a folder counts only once renamed and holding its state file)."""
    root = Path(output_dir) / CHECKPOINTS
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


def trainable_state_hook(accelerator: Any, only_trainable: bool) -> None:
    """Save only trainable tensors in checkpoints of LoRA runs (the frozen base is reloaded, not copied)."""
    if not only_trainable:
        return

    def hook(models: list[Any], weights: list[dict[str, Any]], _output_dir: str) -> None:
        for model, state in zip(models, weights, strict=False):
            keep = {n for n, p in model.named_parameters() if p.requires_grad}
            for key in [k for k in state if k not in keep]:
                del state[key]

    accelerator.register_save_state_pre_hook(hook)


# -- saving ------------------------------------------------------------------------------------------
def save_checkpoint(
    acc: Any, out: Path, state: dict[str, Any], keep: int, export: Callable[[Path], None] | None = None
) -> Path:
    """Write checkpoint-<step> atomically (every process calls this), keep the newest `keep`, return it.

    `export(folder)` (called on every process, before the rename) adds what makes it loadable as a model.
    """
    step = state["step"]
    root = out / CHECKPOINTS
    final = root / f"checkpoint-{step}"
    tmp = root / f".tmp-checkpoint-{step}"
    if acc.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if export is not None:
        export(tmp)
    acc.wait_for_everyone()
    if acc.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(state))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in complete_checkpoints(out)[: -max(1, keep)]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()
    return final


# -- resuming ----------------------------------------------------------------------------------------
def read_state(checkpoint: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint; CheckpointError naming the file when it is empty or garbled."""
    path = checkpoint / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable trainer state ({err or 'empty file'})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a readable trainer state (a JSON {type(state).__name__})")
    for key, kind in _STATE_TYPES.items():
        if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
            raise CheckpointError(
                f"{path}: not a readable trainer state ({key!r} missing or not {kind.__name__})"
            )
    return state


def _check_weights(checkpoint: Path) -> None:
    """Open the header of every safetensors file (a truncated file fails here, before anything is loaded)."""
    from safetensors import safe_open

    for path in sorted(checkpoint.glob("*.safetensors")):
        try:
            with safe_open(str(path), "pt"):
                pass
        except Exception as err:  # safetensors raises its own error types (and OSError)
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from None


def _broken_file(checkpoint: Path, err: Exception) -> str:
    """Which file of a checkpoint Accelerate failed on: the first torch file that does not load as tensors."""
    import torch

    for path in sorted(checkpoint.glob("*.bin")):
        try:
            torch.load(path, map_location="cpu", weights_only=True)
        except Exception as probe:
            return f"{path}: not a readable torch file ({type(probe).__name__}: {str(probe).splitlines()[0]})"
    return f"{checkpoint}: Accelerate could not load it ({type(err).__name__}: {err})"


def _load(acc: Any, checkpoint: Path) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states from `checkpoint`; its trainer state."""
    state = read_state(checkpoint)
    _check_weights(checkpoint)
    try:
        acc.load_state(str(checkpoint), strict=False)
    except Exception as err:  # torch/pickle/safetensors errors of a damaged file
        raise CheckpointError(_broken_file(checkpoint, err)) from err
    return state


def resume(acc: Any, out: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """(trainer state, checkpoint) of the newest intact checkpoint in out/, or (None, None) if there is none.

    A checkpoint every later one of which is broken is used with a `BrokenCheckpointWarning` per broken one;
    when all are broken, CheckpointError names them.
    """
    problems = []
    for checkpoint in reversed(complete_checkpoints(out)):
        try:
            state = _load(acc, checkpoint)
        except CheckpointError as err:
            problems.append(str(err))
            warnings.warn(
                f"cannot resume from {checkpoint.name}: {err}", BrokenCheckpointWarning, stacklevel=2
            )
            continue
        if problems:
            acc.print(f"resuming from the older {checkpoint.name} instead")
        return state, checkpoint
    if problems:
        raise CheckpointError(
            f"no intact checkpoint in {out / CHECKPOINTS} to resume from: {'; '.join(problems)} "
            "(delete the broken checkpoints, or set output.resume=false to start over)"
        )
    return None, None
