"""The run's clock: one reading per optimizer step, the same on every process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from text4seg.train import config_from_dict
from text4seg.train.clock import RunClock
from text4seg.train.setup import lr_lambda, time_fraction_since


def test_one_process_reads_its_own_clock():
    clock = RunClock(SimpleNamespace(num_processes=1), started=time.monotonic() - 30.0)
    assert clock.elapsed == 0.0  # nothing read before the first step
    first = clock.tick()
    assert 30.0 <= first < 40.0 and clock.elapsed == first
    assert clock.tick() >= first


def test_time_schedule_follows_the_last_tick_not_the_moment_it_is_read():
    cfg = config_from_dict(
        {"optim": {"schedule_by": "time", "warmup_steps": 0, "min_lr_ratio": 0.0}, "loop": {"max_minutes": 1}}
    )
    clock = RunClock(None, started=time.monotonic() - 30.0)  # half of the one-minute budget spent
    factor = lr_lambda(cfg, 100, time_fraction_since(cfg, clock))
    assert factor(5) == 1.0  # no tick yet: nothing spent
    clock.tick()
    assert abs(factor(5) - 0.5) < 0.1  # cosine at about half the budget
    time.sleep(0.05)
    assert factor(5) == factor(6)  # the same tick, the same rate, however late it is read


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_agree_on_the_main_process_clock(tmp_path):
    """Rank 1's own clock runs 100 s ahead; every tick still reads rank 0's time on both ranks, so the
    time-based schedule and the max_minutes stop cannot differ between processes."""
    port = str(_free_port())
    procs = []
    for rank in (0, 1):
        env = dict(
            os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=port, RANK=str(rank), LOCAL_RANK=str(rank),
            WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="true",
        )  # fmt: skip
        worker = Path(__file__).with_name("_clock_worker.py")
        procs.append(subprocess.Popen([sys.executable, str(worker), str(tmp_path)], env=env))
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["processes"] == r1["processes"] == 2
    assert r0["ticks"] == r1["ticks"]  # the same values, bit for bit
    assert all(t < 60.0 for t in r0["ticks"])  # rank 0's reading, not rank 1's (>= 100 s)
    assert r1["local"] >= 100.0  # rank 1's own clock did run ahead
