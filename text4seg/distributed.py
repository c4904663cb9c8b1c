"""Several processes under `accelerate launch`: the shared process state, and a clean end.

A process that exits with its torch.distributed process group still alive can abort while the
interpreter shuts down (gloo's worker threads are destroyed while still joinable: "terminate called
without an active exception", SIGABRT), after all of its work was done. Every command that may run
under a launcher therefore wraps its work in `processes_session()`, which waits for the other
processes and then destroys the group; `process_state` also registers an exit hook that destroys a
group left alive by library code.

Training and evaluation both import this module; it imports torch and accelerate only when several
processes run.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_HOOKED = False


def world_size() -> int:
    """The number of processes a launcher started (1 without one)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def process_state() -> Any:
    """accelerate's `PartialState` when several processes run (None for one; accelerate is then not imported).

    On a machine without CUDA the processes talk over gloo (`cpu=True`), e.g. under
    `accelerate launch --multi_gpu --num_processes 2` on a CPU-only host.
    """
    if world_size() <= 1:
        return None
    import torch
    from accelerate import PartialState

    cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in (
        "1",
        "true",
        "yes",
    )
    state = PartialState(cpu=cpu)
    end_group_at_exit()
    return state


def end_process_group(wait: bool = True) -> None:
    """Destroy this process's torch.distributed group, if any; with `wait`, after a barrier with the others.

    Safe to call more than once and without a launcher (then it does nothing).
    """
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()


@contextmanager
def processes_session() -> Iterator[None]:
    """Run a command's work; then (success) wait for every process and end the process group.

    On an exception the group is ended without waiting, since the other processes may never arrive.
    """
    try:
        yield
    except BaseException:
        end_process_group(wait=False)
        raise
    end_process_group(wait=True)


def end_group_at_exit() -> None:
    """Register (once) an exit hook that destroys a process group still alive when Python exits."""
    global _HOOKED
    if not _HOOKED:
        atexit.register(end_process_group, wait=False)
        _HOOKED = True
