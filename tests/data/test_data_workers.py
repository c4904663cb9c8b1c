"""The worker pool: results in input order whatever the process count; a dead worker fails the build
with a clear message instead of leaving it waiting forever."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

import pytest

from text4seg.data import arrow_files
from text4seg.data.build import BuildConfig
from text4seg.data.issues import BuildError
from text4seg.data.workers import chunk_map, ordered_map

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@contextmanager
def deadline(seconds: int):
    """Fail (rather than hang the suite) when the block runs past ``seconds``."""

    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: the pool is hanging")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _squares(chunk: list[int]) -> list[int]:
    return [k * k for k in chunk]


def _die_on_seven(chunk: list[int]) -> list[int]:
    if 7 in chunk:
        os._exit(3)  # as a worker killed for memory would vanish
    return _squares(chunk)


@pytest.mark.parametrize("num_proc", [1, 2])
def test_results_come_back_in_input_order(num_proc):
    with deadline(60):
        assert list(ordered_map(_squares, list(range(100)), num_proc)) == [k * k for k in range(100)]


@pytest.mark.parametrize("num_proc", [1, 2])
def test_chunk_results_come_back_in_input_order(num_proc):
    with deadline(60):
        chunks = list(chunk_map(_squares, list(range(100)), num_proc, 7))
    assert [len(chunk) for chunk in chunks] == [7] * 14 + [2]
    assert [v for chunk in chunks for v in chunk] == [k * k for k in range(100)]


def test_forked_workers_inherit_the_items_and_the_function():
    offset = 1000
    items = list(range(20))  # the closure could not be pickled to a worker
    with deadline(60):
        chunks = list(chunk_map(lambda chunk: [offset + len(chunk)], items, 2, 3))
    assert chunks == [[1003]] * 6 + [[1002]]


def test_a_dead_worker_fails_the_chunk_map_instead_of_hanging():
    with deadline(60), pytest.raises(BuildError, match="a worker process died while building shapes"):
        list(chunk_map(_die_on_seven, list(range(40)), 2, 3, what="shapes"))


def test_a_dead_worker_fails_the_map_instead_of_hanging():
    with deadline(60), pytest.raises(BuildError, match="a worker process died while building shapes"):
        list(ordered_map(_die_on_seven, list(range(40)), 2, what="shapes"))


def test_a_dead_worker_fails_the_build_and_writes_nothing(synth, build_kind, tmp_path, monkeypatch):
    def die(jobs):
        os._exit(3)

    monkeypatch.setattr(arrow_files, "build_images", die)  # inherited by the forked workers
    out = tmp_path / "out"
    with deadline(120), pytest.raises(BuildError, match="refcoco images"):
        build_kind("refcoco", synth, out, config=BuildConfig(num_proc=2, progress=False))
    assert not out.exists()
    assert not list(tmp_path.glob("out.tmp-*"))
