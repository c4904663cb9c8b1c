"""The worker pool of a build: chunks of jobs run in ``num_proc`` processes, results in input order.

`concurrent.futures.ProcessPoolExecutor` rather than `multiprocessing.Pool`: when a worker dies (killed
for memory, a crash in C code) a Pool waits forever for its result, while the executor raises
`BrokenProcessPool`, which `ordered_map` turns into a `BuildError` that says so. At most a few chunks
per process are in flight, so results waiting for the writer stay few. Forked workers inherit the
items and are sent only each chunk's bounds (pickling a build's jobs cost the main process 0.1 s per
2,000 images, and the workers 0.16 s to unpickle).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from .issues import BuildError

if TYPE_CHECKING:  # the pool's modules are imported when a pool is started (not by one-process builds)
    import multiprocessing.context
    from concurrent.futures import Future, ProcessPoolExecutor

T = TypeVar("T")
R = TypeVar("R")

IN_FLIGHT_PER_PROCESS = 4


def _chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def forks() -> bool:
    """Whether worker processes are forked, inheriting this process's memory: wherever multiprocessing
    has the fork start method (not Windows: there they are spawned and sent what they work on)."""
    import multiprocessing

    return "fork" in multiprocessing.get_all_start_methods()


def _context() -> multiprocessing.context.BaseContext:
    import multiprocessing

    # fork where the platform has it: spawn re-imports the caller's __main__, which fails for
    # stdin, notebooks and unguarded scripts
    return multiprocessing.get_context("fork" if forks() else "spawn")


def ordered_map(
    run_chunk: Callable[[list[T]], list[R]], items: Sequence[T], num_proc: int, what: str = "items"
) -> Iterator[R]:
    """``run_chunk`` over chunks of ``items`` in ``num_proc`` processes (in this one when 1), yielding
    each item's result in input order. A worker that dies raises `BuildError` naming ``what``; an
    exception raised by ``run_chunk`` is raised here as is."""
    if num_proc <= 1 or len(items) < 2:
        for chunk in _chunks(items, 1):
            yield from run_chunk(chunk)
        return
    size = max(1, min(32, len(items) // (num_proc * 8)))
    for results in chunk_map(run_chunk, items, num_proc, size, what):
        yield from results


def chunk_map(
    run_chunk: Callable[[list[T]], R],
    items: Sequence[T],
    num_proc: int,
    size: int,
    what: str = "items",
    initializer: Callable[[], None] | None = None,
) -> Iterator[R]:
    """``run_chunk`` over consecutive chunks of ``size`` items in ``num_proc`` processes (in this one
    when 1), yielding each chunk's result in input order; ``initializer`` runs first in each worker
    process. A worker that dies raises `BuildError` naming ``what``; an exception raised by
    ``run_chunk`` is raised here as is."""
    if num_proc <= 1 or len(items) <= size:
        yield from map(run_chunk, _chunks(items, size))
        return
    context = _context()
    key = next(_KEYS)
    if context.get_start_method() == "fork":  # workers inherit the items: only their bounds are sent
        _SHARED[key] = (run_chunk, items)
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(num_proc, mp_context=context, initializer=initializer)
    window: deque[Future] = deque()
    try:
        for start in range(0, len(items), size):
            window.append(_submit(pool, key, run_chunk, items, start, size, what))
            if len(window) >= num_proc * IN_FLIGHT_PER_PROCESS:
                yield _result(window.popleft(), what)
        while window:
            yield _result(window.popleft(), what)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _SHARED.pop(key, None)


_SHARED: dict[int, tuple[Callable, Sequence]] = {}
"""(function, items) of each running `chunk_map`, read by its forked workers (set before they start)."""
_KEYS = itertools.count()


def _submit(
    pool: ProcessPoolExecutor,
    key: int,
    run_chunk: Callable,
    items: Sequence,
    start: int,
    size: int,
    what: str,
) -> Future:
    """Submit one chunk: its bounds to forked workers, else the chunk itself."""
    try:
        if key in _SHARED:
            return pool.submit(_run_shared, key, start, start + size)
        return pool.submit(run_chunk, list(items[start : start + size]))
    except _broken():  # a worker died before all chunks were submitted
        raise _died(what) from None


def _run_shared(key: int, start: int, stop: int) -> object:
    run_chunk, items = _SHARED[key]
    return run_chunk(list(items[start:stop]))


def _result(future: Future, what: str) -> R:
    try:
        return future.result()
    except _broken():
        raise _died(what) from None


def _broken() -> type[Exception]:
    from concurrent.futures.process import BrokenProcessPool

    return BrokenProcessPool


def _died(what: str) -> BuildError:
    return BuildError(
        f"a worker process died while building {what} (killed by the system, e.g. out of memory, "
        "or crashed); the build was stopped and nothing was written"
    )
