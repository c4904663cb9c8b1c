"""What a run leaves to be used: a model folder that `from_pretrained` and `text4seg predict` load.

final/ (and merged/, and the export part of each checkpoint-N/) holds the adapter of a LoRA run (or the
full model), the processor, and `text4seg.json`: how the model must be asked, written from what it was
trained on (`text4seg.train.data.trained_asking`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from text4seg.models.unwrap import unwrap_model
from text4seg.protocol.asking import Asking


def _name_base(peft_model: Any, base_name: str) -> None:
    for peft_config in peft_model.peft_config.values():
        peft_config.base_model_name_or_path = base_name


def export_model(
    acc: Any, model: Any, processor: Any, base_name: str, asking: Asking, folder: Path, weights: bool = True
) -> None:
    """Write the model (every process calls this: gathering weights is collective), processor and
    text4seg.json to `folder`.

    A LoRA run writes its adapter; a full fine-tune its weights and config, or with `weights=False` only
    the config (a checkpoint already holds Accelerate's model.safetensors, which `from_pretrained` reads;
    under DeepSpeed/FSDP, whose checkpoints hold sharded states instead, no config is written).
    """
    peft_model = unwrap_model(model, keep_peft=True)
    is_peft = hasattr(peft_model, "peft_config")
    state_dict = acc.get_state_dict(model) if is_peft or weights else None  # gathers ZeRO-3/FSDP shards
    if acc.is_main_process:
        if is_peft:
            _name_base(peft_model, base_name)
        if state_dict is not None:
            peft_model.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
        elif (folder / "model.safetensors").is_file():
            _save_config(unwrap_model(model), folder)
        processor.save_pretrained(folder)
        asking.save(folder)


def _save_config(model: Any, folder: Path) -> None:
    model.config.save_pretrained(folder)
    generation = getattr(model, "generation_config", None)
    if generation is not None and getattr(model, "can_generate", lambda: False)():
        generation.save_pretrained(folder)


def save_final(
    acc: Any, model: Any, processor: Any, base_name: str, asking: Asking, out: Path, merged: bool
) -> tuple[Path, Path | None]:
    """Write out/final/ (adapter or full model, processor, text4seg.json) and, with `merged` on a LoRA run,
    out/merged/ (the adapter folded into the base model). Returns (final, merged or None)."""
    acc.wait_for_everyone()
    final = out / "final"
    export_model(acc, model, processor, base_name, asking, final)
    peft_model = unwrap_model(model, keep_peft=True)
    merged_dir = None
    if merged and hasattr(peft_model, "peft_config"):
        merged_dir = out / "merged"
        if acc.is_main_process:
            import copy

            copy.deepcopy(peft_model).merge_and_unload().save_pretrained(merged_dir, safe_serialization=True)
            processor.save_pretrained(merged_dir)
            asking.save(merged_dir)
    acc.wait_for_everyone()
    return final, merged_dir
