"""Training the light learned refiner (`text4seg.models.light_refiner`) on records from `text4seg build`.

Each record with a mask gives one example per target (the union for refer/instance records, one per
label for semantic ones): the truth is sent through the record's grid (`nearest`, as Text4Seg's data),
and the net learns to correct the guided upsampling of that grid towards the truth. Training runs on
random crops (`crop` net pixels, mirrored at random) with AdamW at a constant learning rate for a
budget of CPU seconds or a number of steps, whichever ends first; one torch thread is enough.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from text4seg.codec import mask_to_grid
from text4seg.models.light_refiner import (
    LightRefinerConfig,
    LightRefinerNet,
    net_input,
    net_size,
    soft_masks,
    to_logit,
)
from text4seg.protocol.images import read_record_image
from text4seg.protocol.records import ground_truth, record_id

MASK_TASKS = ("refer", "instance", "semantic")


@dataclass(frozen=True)
class RefinerTraining:
    """How the refiner is trained: a budget (`cpu_seconds` of this process, or `steps`, whichever ends
    first), batches of `batch` crops of `crop`×`crop` net pixels, AdamW at `lr`, and a `seed`."""

    cpu_seconds: float = 480.0
    steps: int | None = None
    batch: int = 8
    crop: int = 80
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.cpu_seconds > 0 or (self.steps is not None and self.steps < 1):
            raise ValueError(
                f"the budget must be positive: cpu_seconds={self.cpu_seconds}, steps={self.steps}"
            )
        if self.batch < 1 or self.crop < 8:
            raise ValueError(f"batch must be at least 1 and crop at least 8, got {self.batch}, {self.crop}")


def record_targets(record: Mapping[str, Any]) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[int, int]]]:
    """`(image, mask, grid)` per target of a record with masks: the H×W×3 uint8 image, an H×W bool mask
    and the record's `(rows, cols)`; nothing for records without masks or with empty ones."""
    if record.get("task") not in MASK_TASKS or not record.get("masks"):
        return
    rows, cols = (int(v) for v in record["grid"])
    truth = ground_truth(record)
    masks = truth.masks if truth.task == "semantic" else [truth.mask]
    image = np.asarray(read_record_image(record["images"][0], record_id(record)))
    if image.shape[:2] != truth.mask.shape:
        import cv2

        image = cv2.resize(image, truth.mask.shape[::-1], interpolation=cv2.INTER_AREA)
    for mask in masks:
        if mask.any():
            yield image, mask, (rows, cols)


def example(image: np.ndarray, mask: np.ndarray, grid: tuple[int, int], config: LightRefinerConfig) -> dict:
    """One training example as float16 tensors: `input` (5×h×w at `net_size`), and `base` (guided
    logits) and `truth` (area-averaged mask), both 1×2h×2w."""
    import cv2

    bilinear, guided = soft_masks(mask_to_grid(mask, grid), image)
    height, width = net_size(image.shape[:2], config.side)
    loss_size = (2 * width, 2 * height)
    base = to_logit(cv2.resize(guided, loss_size, interpolation=cv2.INTER_AREA), config.clip)
    truth = cv2.resize(mask.astype(np.float32), loss_size, interpolation=cv2.INTER_AREA)
    return {
        "input": torch.from_numpy(net_input(image, bilinear, guided, config.side)).half(),
        "base": torch.from_numpy(base[None]).half(),
        "truth": torch.from_numpy(truth[None]).half(),
    }


def examples_from_records(records: Iterable[Mapping[str, Any]], config: LightRefinerConfig) -> list[dict]:
    """The training examples of every target of every record with a mask (see `record_targets`)."""
    return [example(*target, config) for record in records for target in record_targets(record)]


def sample_batch(
    examples: list[dict], batch: int, crop: int, generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """`batch` random crops (`crop` net pixels, at most the example's size; mirrored at random) as float32
    `(input, base, truth)`; examples of several sizes are cropped to the smallest side in the batch."""
    picks = torch.randint(0, len(examples), (batch,), generator=generator).tolist()
    side_h = min(crop, *(examples[i]["input"].shape[1] for i in picks))
    side_w = min(crop, *(examples[i]["input"].shape[2] for i in picks))
    out: tuple[list, list, list] = ([], [], [])
    for i in picks:
        ex = examples[i]
        y = int(torch.randint(0, ex["input"].shape[1] - side_h + 1, (), generator=generator))
        x = int(torch.randint(0, ex["input"].shape[2] - side_w + 1, (), generator=generator))
        parts = [
            ex["input"][:, y : y + side_h, x : x + side_w],
            ex["base"][:, 2 * y : 2 * (y + side_h), 2 * x : 2 * (x + side_w)],
            ex["truth"][:, 2 * y : 2 * (y + side_h), 2 * x : 2 * (x + side_w)],
        ]
        if torch.rand((), generator=generator) < 0.5:
            parts = [p.flip(-1) for p in parts]
        for bucket, part in zip(out, parts, strict=True):
            bucket.append(part.float())
    return tuple(torch.stack(bucket) for bucket in out)


def train_light_refiner(
    examples: list[dict],
    config: LightRefinerConfig | None = None,
    training: RefinerTraining | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[LightRefinerNet, dict[str, Any]]:
    """Train a `LightRefinerNet` on `examples` (`examples_from_records`); returns it in eval mode and
    `{steps, cpu_seconds, loss}` (the mean training loss of the last 100 steps). `progress(step, loss)`
    is called every 50 steps."""
    if not examples:
        raise ValueError("no training examples: the records hold no non-empty masks")
    training = training or RefinerTraining()
    torch.manual_seed(training.seed)
    generator = torch.Generator().manual_seed(training.seed)
    net = LightRefinerNet(config)
    optimizer = torch.optim.AdamW(net.parameters(), lr=training.lr, weight_decay=training.weight_decay)
    net.train()
    losses: list[float] = []
    start = time.process_time()
    while time.process_time() - start < training.cpu_seconds and len(losses) != training.steps:
        x, base, truth = sample_batch(examples, training.batch, training.crop, generator)
        out = base + F.interpolate(net(x), size=base.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.binary_cross_entropy_with_logits(out, truth)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if progress is not None and len(losses) % 50 == 0:
            progress(len(losses), float(np.mean(losses[-50:])))
    info = {
        "steps": len(losses),
        "cpu_seconds": time.process_time() - start,
        "loss": float(np.mean(losses[-100:])),
    }
    return net.eval(), info
