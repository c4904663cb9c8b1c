"""CPU seconds per sentence: the bare serial script (bench/serial_script.py) against
`text4seg build refcoco --image-store paths --no-cache` with --num-proc 1 and 2 (and the default build,
each image stored once, with --num-proc 1), on a synthetic source; and the serial part of a build (its
imports and reading the sources, which --num-proc cannot spread), from which the gain of --num-proc 2
on 2 free cores is estimated.

Every command runs with Python's bytecode cache on (under bench/_work, after one unmeasured warm-up
run of each), as an installed package runs; ``--no-bytecode`` keeps the environment as it is (this
machine sets PYTHONDONTWRITEBYTECODE=1, so each run compiles every module it imports, which weighs on
a build, with its ~60 text4seg modules, more than on the script).

Each command runs as a child of a fresh wrapper process, which reports the child's CPU time (user +
sys, workers included: `resource.getrusage(RUSAGE_CHILDREN)`) and its peak resident memory (the
largest of the build process and its workers, `ru_maxrss`). CPU time is the figure: on a shared,
loaded machine wall time measures the neighbours; wall time is printed too, with the 1-minute load
average read before each run. Medians of ``--repeats`` runs. Afterwards the records of the builds are
compared field for field (`datasets` tables: every column, every row): --num-proc 1 against 2, and
against the older checkout's when ``--old-tree`` is given.

Run: `.venv/bin/python bench/bench_build_cpu.py SOURCE_DIR [--repeats 3] [--old-tree DIR]`
where SOURCE_DIR holds ``refs(unc).p``, ``instances.json`` and ``images/`` (as written by
`text4seg build synthetic` or `text4seg.data.synthetic.make_synthetic`). ``--old-tree`` times the
build of another checkout too (a folder holding its ``text4seg`` package, e.g. from `git archive`).
Prints a markdown table; scratch output goes to bench/_work/build_cpu (deleted afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
WORK = HERE / "_work" / "build_cpu"

_WRAPPER = (
    "import resource, subprocess, sys, json, time\n"
    "start = time.perf_counter()\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "wall = time.perf_counter() - start\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps([done.returncode, r.ru_utime + r.ru_stime, r.ru_maxrss, wall]))\n"
)


def measure(
    command: list[str], cwd: Path | None = None, env: dict | None = None
) -> tuple[float, float, float, float]:
    """(CPU seconds, peak RSS in MiB, wall seconds, 1-minute load average before) of ``command`` and
    every process it started."""
    load = os.getloadavg()[0]
    out = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *command], capture_output=True, text=True, cwd=cwd, env=env
    )
    code, cpu, rss_kib, wall = json.loads(out.stdout.strip().splitlines()[-1])
    if code:
        raise SystemExit(f"error: {' '.join(command)} exited with {code}: {out.stderr[-2000:]}")
    return cpu, rss_kib / 1024, wall, load


_SERIAL_PART = (
    "import sys\n"
    "from text4seg.cli import build_parser\n"
    "build_parser()\n"
    "from text4seg.data.arrow_files import pyarrow_without_pandas\n"
    "pyarrow_without_pandas()\n"
    "from text4seg.data.build import BuildConfig, paused_gc\n"
    "from text4seg.data.records import image_jobs\n"
    "from text4seg.data.refer import load_refcoco\n"
    "with paused_gc():\n"
    "    image_jobs(load_refcoco(sys.argv[1], sys.argv[2], deferred=True), BuildConfig(progress=False))\n"
)
"""What a build does in its main process before any record is made (imports, reading the sources and
grouping them by image, as `text4seg build` does: each image's checks and specs are left to the
workers; one job per image): the part `--num-proc` cannot spread."""

SERIAL_NAME = "serial part of a build (imports, reading the sources)"


def _build(source: Path, out: Path, num_proc: int, store: str = "paths") -> list[str]:
    return [
        sys.executable,
        "-m",
        "text4seg.cli",
        "build",
        "refcoco",
        "--ann",
        str((source / "refs(unc).p").resolve()),
        "--images",
        str((source / "images").resolve()),
        "--out",
        str(out.resolve()),
        "--image-store",
        store,
        "--no-cache",
        "--num-proc",
        str(num_proc),
        "--quiet",
    ]


def _commands(source: Path, old_tree: Path | None) -> dict[str, tuple[list[str], Path | None, dict | None]]:
    serial = [
        sys.executable,
        str((HERE / "serial_script.py").resolve()),
        str(source / "refs(unc).p"),
        str(source / "instances.json"),
        str(WORK / "serial.json"),
    ]
    commands = {"serial script": (serial, None, None)}
    if old_tree is not None:
        env = {**os.environ, "PYTHONPATH": str(old_tree.resolve())}
        commands["build, before (--num-proc 1)"] = (_build(source, WORK / "old1", 1), old_tree, env)
    commands["build --num-proc 1"] = (_build(source, WORK / "new1", 1), None, None)
    commands["build --num-proc 2"] = (_build(source, WORK / "new2", 2), None, None)
    commands["build --num-proc 1, default store (images once, hard links)"] = (
        _build(source, WORK / "folder1", 1, "folder"),
        None,
        None,
    )
    refs, images = str((source / "refs(unc).p").resolve()), str((source / "images").resolve())
    commands[SERIAL_NAME] = ([sys.executable, "-c", _SERIAL_PART, refs, images], None, None)
    return commands


def _with_bytecode(env: dict | None) -> dict:
    """``env`` (default: this process's) with bytecode written and read under WORK/pycache, for the
    measured commands only (nothing is written into the source tree)."""
    env = {**(env or os.environ), "PYTHONPYCACHEPREFIX": str((WORK / "pycache").resolve())}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _tables(folder: Path) -> dict:
    from datasets import load_from_disk

    return {split: data.data.table for split, data in load_from_disk(str(folder)).items()}


def compare_records(first: Path, second: Path) -> int:
    """How many records the builds in ``first`` and ``second`` hold, after checking that they hold the
    same splits, schema and values (every column of every record); SystemExit naming the split if not."""
    a, b = _tables(first), _tables(second)
    if list(a) != list(b):
        raise SystemExit(f"error: {first} and {second} hold different splits: {list(a)} vs {list(b)}")
    for split in a:
        if not (a[split].schema.equals(b[split].schema) and a[split].equals(b[split])):
            raise SystemExit(f"error: the {split} records of {first} and {second} differ")
    return sum(table.num_rows for table in a.values())


def _sentences(source: Path) -> int:
    from text4seg.data.safe_pickle import load_pickle

    return sum(len(ref["sentences"]) for ref in load_pickle(source / "refs(unc).p"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-tree", type=Path, default=None)
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="run as the environment says (a PYTHONDONTWRITEBYTECODE=1 makes every run compile every "
        "module it imports from source) instead of with bytecode cached, as an installed package has it",
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    sentences = _sentences(args.source)
    commands = _commands(args.source, args.old_tree)
    if not args.no_bytecode:
        commands = {
            name: (command, cwd, _with_bytecode(env)) for name, (command, cwd, env) in commands.items()
        }
        for command, cwd, env in commands.values():  # warm-up, not measured: writes the bytecode caches
            measure(command, cwd, env)
    runs: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in commands}
    for _ in range(args.repeats):  # interleaved, so a burst of load hits every command alike
        for name, (command, cwd, env) in commands.items():
            runs[name].append(measure(command, cwd, env))
    pairs = [("new1", "new2")] + ([("old1", "new1")] if args.old_tree else [])
    compared = {pair: compare_records(WORK / pair[0], WORK / pair[1]) for pair in pairs}
    shutil.rmtree(WORK, ignore_errors=True)
    _print(runs, sentences, args.repeats, compared)


def _print(runs: dict, sentences: int, repeats: int, compared: dict) -> None:
    base = statistics.median(run[0] for run in runs["serial script"])
    loads = [run[3] for values in runs.values() for run in values]
    print(
        f"{sentences} sentences, medians of {repeats} (os.cpu_count() = {os.cpu_count()}, 1-minute load "
        f"average before the runs {min(loads):.1f}–{max(loads):.1f})\n"
    )
    print(
        "| command | CPU s (user+sys), median | runs | CPU ms per sentence | vs serial script "
        "| peak RSS MiB | wall s, median (load before) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, values in runs.items():
        cpu = statistics.median(v[0] for v in values)
        rss = max(v[1] for v in values)
        wall = statistics.median(v[2] for v in values)
        spread = ", ".join(f"{v[0]:.2f}" for v in values)
        load = ", ".join(f"{v[3]:.1f}" for v in values)
        print(
            f"| {name} | {cpu:.2f} | {spread} | {1000 * cpu / sentences:.3f} | {cpu / base:.2f}× | {rss:.0f} "
            f"| {wall:.1f} ({load}) |"
        )
    _print_bound(runs)
    names = {"new1": "--num-proc 1", "new2": "--num-proc 2", "folder1": "default store", "old1": "before"}
    for (a, b), count in compared.items():
        print(f"\nrecords equal field for field, {names[a]} vs {names[b]}: {count}")


def _print_bound(runs: dict) -> None:
    """The wall-time gain `--num-proc 2` can give on 2 free cores, estimated from CPU time: the serial
    part runs alone, the rest of the 2-process build's CPU is split over 2 cores."""
    cpu = {name: statistics.median(run[0] for run in values) for name, values in runs.items()}
    serial, one, two = cpu[SERIAL_NAME], cpu["build --num-proc 1"], cpu["build --num-proc 2"]
    wall = serial + (two - serial) / 2
    print(
        f"\non 2 free cores (estimate from CPU time, not measured): --num-proc 1 ≈ {one:.2f} s, --num-proc 2 "
        f"≈ {serial:.2f} + ({two:.2f} − {serial:.2f}) / 2 = {wall:.2f} s: {one / wall:.2f}× faster"
    )


if __name__ == "__main__":
    main()
