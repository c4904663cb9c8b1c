"""The run's wall clock, read the same way by every process.

Two rules of a run depend on the wall clock: `optim.schedule_by: time` (the learning rate follows the
spent fraction of `loop.max_minutes`) and the `loop.max_minutes` stop. Under `accelerate launch` each
process would read its own clock: their learning rates would differ by a little each step (the replicas
drift apart, DDP only averages gradients) and one process could stop a step before another, which then
waits forever in its next gradient all-reduce. `RunClock.tick()` is called once per optimizer step, on
every process; it reads the main process's clock and broadcasts it, so every process sees the same value.
"""

from __future__ import annotations

import time
from typing import Any


class RunClock:
    """Seconds since the run started, agreed by every process at each `tick()`."""

    def __init__(self, accelerator: Any = None, started: float | None = None) -> None:
        self.accelerator = accelerator
        self.started = time.monotonic() if started is None else started
        self.elapsed = 0.0  # the value of the last tick (what the schedule and the stop rule read)

    def local(self) -> float:
        """This process's own reading (for display only: it may differ between processes)."""
        return time.monotonic() - self.started

    def tick(self) -> float:
        """Read the clock once for the step: the main process's reading, the same on every process."""
        elapsed = self.local()
        acc = self.accelerator
        if acc is not None and acc.num_processes > 1:
            import torch
            from accelerate.utils import broadcast

            value = torch.tensor(
                [elapsed], dtype=torch.float64 if acc.device.type != "mps" else torch.float32
            )
            elapsed = float(broadcast(value.to(acc.device), from_process=0)[0])
        self.elapsed = elapsed
        return elapsed
