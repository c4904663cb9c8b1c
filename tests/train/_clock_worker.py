"""One process of tests/train/test_train_clock.py: ticks a RunClock whose start differs by rank."""

from __future__ import annotations

import json
import os
import sys
import time


def main(out: str) -> None:
    from accelerate import Accelerator

    from text4seg.distributed import processes_session
    from text4seg.train.clock import RunClock

    with processes_session():
        acc = Accelerator(cpu=True)
        rank = acc.process_index
        # rank 1's run "started" 100 s earlier: its own clock reads 100 s more than rank 0's
        clock = RunClock(acc, started=time.monotonic() - 100.0 * rank)
        ticks = [clock.tick() for _ in range(3)]
        local = clock.local()
        with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
            json.dump({"ticks": ticks, "local": local, "processes": acc.num_processes}, f)


if __name__ == "__main__":
    main(sys.argv[1])
