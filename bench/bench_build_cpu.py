"""CPU seconds per sentence: the bare serial script (bench/serial_script.py) against
`text4seg build refcoco --image-paths --no-cache` with --num-proc 1 and 2, on a synthetic source.

Each command runs as a child of a fresh wrapper process, which reports the child's CPU time (user +
sys, workers included: `resource.getrusage(RUSAGE_CHILDREN)`) and its peak resident memory (the
largest of the build process and its workers, `ru_maxrss`). CPU time, not wall time: on a shared,
loaded machine wall time measures the neighbours. Medians of ``--repeats`` runs.

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
    "import resource, subprocess, sys, json\n"
    "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps([done.returncode, r.ru_utime + r.ru_stime, r.ru_maxrss]))\n"
)


def measure(command: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, float]:
    """(CPU seconds, peak RSS in MiB) of ``command`` and every process it started."""
    out = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *command], capture_output=True, text=True, cwd=cwd, env=env
    )
    code, cpu, rss_kib = json.loads(out.stdout.strip().splitlines()[-1])
    if code:
        raise SystemExit(f"error: {' '.join(command)} exited with {code}: {out.stderr[-2000:]}")
    return cpu, rss_kib / 1024


def _build(source: Path, out: Path, num_proc: int) -> list[str]:
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
        "--image-paths",
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
    return commands


def _sentences(source: Path) -> int:
    from text4seg.data.safe_pickle import load_pickle

    return sum(len(ref["sentences"]) for ref in load_pickle(source / "refs(unc).p"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--old-tree", type=Path, default=None)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    sentences = _sentences(args.source)
    commands = _commands(args.source, args.old_tree)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(args.repeats):  # interleaved, so a burst of load hits every command alike
        for name, (command, cwd, env) in commands.items():
            runs[name].append(measure(command, cwd, env))
    shutil.rmtree(WORK, ignore_errors=True)
    base = statistics.median(cpu for cpu, _ in runs["serial script"])
    print(
        f"{sentences} sentences, medians of {args.repeats} (os.cpu_count() = {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.1f})\n"
    )
    print(
        "| command | CPU s (user+sys), median | runs | CPU ms per sentence | vs serial script | peak RSS MiB |"
    )
    print("|---|---|---|---|---|---|")
    for name, values in runs.items():
        cpu = statistics.median(v for v, _ in values)
        rss = max(r for _, r in values)
        spread = ", ".join(f"{v:.2f}" for v, _ in values)
        print(
            f"| {name} | {cpu:.2f} | {spread} | {1000 * cpu / sentences:.3f} | {cpu / base:.2f}× | {rss:.0f} |"
        )


if __name__ == "__main__":
    main()
