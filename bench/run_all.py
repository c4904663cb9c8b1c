"""Run every bench/bench_*.py in turn and assemble BENCHMARKS.md from their bench/results/*.md sections.

`make bench` calls this. Each bench script writes its own section, so one can also be re-run alone
(`.venv/bin/python bench/bench_codec.py`) and the file re-assembled with `--collect-only`.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
ORDER = [
    "codec",
    "upsample",
    "data",
    "train",
    "collate",
    "visible",
    "infer",
    "eval",
    "semantic",
    "reliability",
    "demo",
]


def collect() -> str:
    sections = {p.stem: p.read_text().strip() for p in sorted((HERE / "results").glob("*.md"))}
    ordered = [sections.pop(name) for name in ORDER if name in sections] + list(sections.values())
    header = (
        "# Benchmarks\n\n"
        "Every figure here was measured by `make bench` (or the per-section command it names) on the "
        "machine the section states; re-run to refresh. CPU figures come from a 2-core machine.\n"
    )
    return header + "\n\n" + "\n\n".join(ordered) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--collect-only", action="store_true", help="only re-assemble BENCHMARKS.md")
    parser.add_argument("--only", nargs="*", help="run only these benches (e.g. codec data)")
    args = parser.parse_args()
    failed = []
    if not args.collect_only:
        for script in sorted(HERE.glob("bench_*.py")):
            name = script.stem.removeprefix("bench_")
            if args.only and name not in args.only:
                continue
            print(f"== {script.name} ({platform.node()})", flush=True)
            start = time.perf_counter()
            if subprocess.run([sys.executable, str(script)]).returncode != 0:
                failed.append(script.name)
            print(f"== {script.name} done in {time.perf_counter() - start:.0f} s", flush=True)
    (HERE.parent / "BENCHMARKS.md").write_text(collect())
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
