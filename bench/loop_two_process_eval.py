"""Run `text4seg evaluate` under `accelerate launch` (2 processes, gloo) N times in a row.

The reliability check for the two-process evaluation test (tests/eval/test_eval_cli.py): every run must
exit 0 and give the single process's metrics. Builds the same tiny Qwen2.5-VL and records as the test
once, then launches N times; prints one line per run and a total, and exits 1 on any failure.

    .venv/bin/python bench/loop_two_process_eval.py --runs 50
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "eval"))

ARGS = ["--split", "val", "--limit", "5", "--batch-size", "1", "--refine", "sam", "--sam", "tiny"]
ARGS += ["--min-iou", "0", "--quiet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare(root: Path) -> None:
    import datasets
    from eval_records import make_records

    from text4seg.models.tiny import build_tiny

    model, processor = build_tiny("qwen2_5_vl")
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    datasets.DatasetDict({"val": make_records(n_images=2)}).save_to_disk(str(root / "data"))


def _launch(root: Path, out: Path, processes: int) -> subprocess.CompletedProcess:
    args = [str(root / "model"), "--data", str(root / "data"), *ARGS, "--out", str(out)]
    script = ROOT / "tests" / "eval" / "_launch_evaluate.py"
    if processes == 1:
        cmd = [sys.executable, str(script), *args]
    else:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["--main_process_port", str(_free_port()), str(script), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _prepare(root)
        single = _launch(root, root / "single", 1)
        if single.returncode != 0:
            print(single.stderr[-3000:])
            return 1
        want = json.loads((root / "single" / "report.json").read_text())["metrics"]
        failures = 0
        for k in range(args.runs):
            started = time.monotonic()
            out = root / f"double{k}"
            run = _launch(root, out, 2)
            ok = run.returncode == 0 and json.loads((out / "report.json").read_text())["metrics"] == want
            failures += not ok
            print(
                f"run {k + 1}: rc {run.returncode} {'ok' if ok else 'FAIL'} {time.monotonic() - started:.1f} s"
            )
            if not ok:
                print(run.stderr[-2000:])
    print(f"{args.runs - failures} passed, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
