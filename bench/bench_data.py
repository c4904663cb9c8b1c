"""Data figures: synthetic dataset writing speed, record-building throughput with num_proc 1 and 2,
and answer length in tokens, R-RLE against the uncompressed per-cell text, with a locally trained
byte-level BPE tokenizer.

Run: `.venv/bin/python bench/bench_data.py [--num-images 2000]` (or `make bench`); `--bytes` measures only
the bytes on disk of the default layout (each image once) against `--image-store embed` at 640×480, through
the `text4seg build synthetic` command (section kept when the main run rewrites the file).
Writes bench/results/data.md; scratch files go to bench/_work/data (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import datasets  # noqa: F401  (imported up front so its import time is not counted in the first build)
import numpy as np
from pycocotools import mask as mask_utils
from tokenizers import ByteLevelBPETokenizer

import text4seg as t4s
from text4seg.data.build import BuildConfig, build, build_records
from text4seg.data.refer import load_refcoco
from text4seg.data.synthetic import make_synthetic

HERE = Path(__file__).parent
OUT = HERE / "results" / "data.md"
WORK = HERE / "_work" / "data"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _answer(record: dict) -> str:
    return record["messages"][1]["content"][0]["text"]


def _label_map(record: dict) -> np.ndarray:
    """The record's full-resolution label map, from its RLE masks (value k = labels[k])."""
    size = [record["height"], record["width"]]
    label_map = np.zeros(size, dtype=np.int32)
    for value, counts in enumerate(record["masks"], start=1):
        label_map[mask_utils.decode({"size": size, "counts": counts.encode()}).astype(bool)] = value
    return label_map


def _answers(record: dict, label_map: np.ndarray, grid: int) -> tuple[str, str]:
    """The record's answer with its descriptor re-made at ``grid``: (R-RLE, one label per cell)."""
    fmt = t4s.TEXT4SEG.with_grid(grid)
    if len(record["masks"]) > 1:
        cells = t4s.label_map_to_grid(label_map, grid)
    else:
        cells = t4s.mask_to_grid(label_map > 0, grid).astype(np.int32)
    sentence = _answer(record).split("\n<seg>", 1)[0]
    rle = t4s.format_answer(sentence, t4s.grid_to_text(cells, record["labels"], fmt), fmt)
    per_cell = t4s.format_answer(sentence, t4s.grid_to_cell_text(cells, record["labels"], fmt), fmt)
    return rle, per_cell


def _histogram(rle: list[int], cell: list[int], width: int = 50) -> list[str]:
    top = max(max(rle), max(cell))
    edges = list(range(0, top + width, width))
    rle_counts = np.histogram(rle, bins=edges)[0]
    cell_counts = np.histogram(cell, bins=edges)[0]
    scale = 40 / max(rle_counts.max(), cell_counts.max())
    lines = ["```", f"{'tokens':<10} | {'R-RLE':<46} | per-cell"]
    for k in range(len(edges) - 1):
        if rle_counts[k] == 0 and cell_counts[k] == 0:
            continue
        left = "#" * int(round(rle_counts[k] * scale))
        right = "#" * int(round(cell_counts[k] * scale))
        lines.append(
            f"{edges[k]:>4}–{edges[k + 1] - 1:<5} | {rle_counts[k]:>5} {left:<40} | {cell_counts[k]:>5} {right}"
        )
    lines.append("```")
    return lines


def _stats(values: list[int]) -> str:
    arr = np.asarray(values)
    return f"{arr.mean():.0f} | {np.median(arr):.0f} | {np.percentile(arr, 95):.0f} | {arr.max()}"


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _storage_rows(paths, anns: dict, built: dict) -> list[str]:
    """Bytes on disk of each record set stored once (the default, ``built``) and with images embedded."""
    rows = []
    for kind in ("coco", "refcoco", "grefcoco"):
        out = WORK / f"{kind}_embed"
        start = time.perf_counter()
        result = build(kind, anns[kind], paths.images, out, BuildConfig(image_store="embed", progress=False))
        seconds = time.perf_counter() - start
        embed, once = _folder_bytes(out), _folder_bytes(built[kind].out_dir)
        images = built[kind].report["images_stored"]
        rows.append(
            f"| {kind} | {result.report['records_total']} | {images} | {embed / 2**20:.1f} | {once / 2**20:.1f} "
            f"| {embed / once:.1f}× | {seconds:.2f} |"
        )
        print(f"{kind}: embed {embed / 2**20:.1f} MiB, folder {once / 2**20:.1f} MiB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument(
        "--bytes", action="store_true", help="only the bytes-on-disk section (default layout vs embed)"
    )
    parser.add_argument("--bytes-size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    args = parser.parse_args()
    if args.bytes:
        main_bytes(args)
        return
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    command = f"OMP_NUM_THREADS=1 .venv/bin/python bench/bench_data.py --num-images {args.num_images}"

    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    paths = make_synthetic(WORK / "source", num_images=args.num_images, image_size=args.image_size, seed=0)
    synth_s = time.perf_counter() - start
    print(f"synthetic: {args.num_images} images in {synth_s:.1f} s", flush=True)

    anns = {"coco": list(paths.instances_by_split.values()), "refcoco": paths.refs, "grefcoco": paths.grefs}
    rows = []
    built = {}
    for kind in ("coco", "refcoco", "grefcoco"):
        for num_proc in (1, 2):
            out = WORK / f"{kind}_np{num_proc}"
            config = BuildConfig(num_proc=num_proc, progress=False)
            start = time.perf_counter()
            result = build(kind, anns[kind], paths.images, out, config)
            seconds = time.perf_counter() - start
            total = result.report["records_total"]
            rows.append((kind, num_proc, total, seconds, result.report["seconds_by_phase"]))
            built[kind] = result
            print(f"{kind} num_proc={num_proc}: {total} records in {seconds:.1f} s", flush=True)
        start = time.perf_counter()
        again = build(
            kind, anns[kind], paths.images, WORK / f"{kind}_np2", BuildConfig(num_proc=2, progress=False)
        )
        assert again.report["cache"] == "reused"
        rows.append((kind, "cache", again.report["records_total"], time.perf_counter() - start, None))

    cpu_rows = []
    source = load_refcoco(paths.refs, paths.images)
    for num_proc in (1, 2):
        before, start = os.times(), time.perf_counter()
        build_records(source, BuildConfig(num_proc=num_proc, progress=False))
        after, wall = os.times(), time.perf_counter() - start
        main_cpu = after.user - before.user + after.system - before.system
        workers_cpu = (after.children_user - before.children_user) + (
            after.children_system - before.children_system
        )
        cpu_rows.append((num_proc, wall, main_cpu, workers_cpu))
        print(
            f"records phase num_proc={num_proc}: wall {wall:.2f} s, cpu main {main_cpu:.2f} s, workers {workers_cpu:.2f} s"
        )

    storage_rows = _storage_rows(paths, anns, built)

    rng = np.random.default_rng(0)
    train = [r for kind in ("coco", "refcoco", "grefcoco") for r in built[kind].dataset["train"]]
    held_out = [
        r for kind in ("refcoco", "grefcoco", "coco") for s in ("val", "test") for r in built[kind].dataset[s]
    ]
    train = [train[int(i)] for i in rng.choice(len(train), min(3000, len(train)), replace=False)]
    held_out = [held_out[int(i)] for i in rng.choice(len(held_out), min(3000, len(held_out)), replace=False)]
    corpus = []
    for record in train:
        corpus += [*_answers(record, _label_map(record), 16), record["messages"][0]["content"][1]["text"]]
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(corpus, vocab_size=4096, min_frequency=2, show_progress=False)
    lengths: dict[int, tuple[list[int], list[int]]] = {16: ([], []), 24: ([], []), 32: ([], [])}
    same_as_records = True
    for record in held_out:
        label_map = _label_map(record)
        for grid, (rle_lengths, cell_lengths) in lengths.items():
            rle, per_cell = _answers(record, label_map, grid)
            same_as_records &= grid != 16 or rle == _answer(record)
            rle_lengths.append(len(tokenizer.encode(rle).ids))
            cell_lengths.append(len(tokenizer.encode(per_cell).ids))
    for grid, (rle, cell) in lengths.items():
        print(f"grid {grid}: mean tokens R-RLE {np.mean(rle):.0f}, per-cell {np.mean(cell):.0f}", flush=True)

    lines = [
        "## Data",
        "",
        f"Machine: {_cpu()}, {os.cpu_count()} cores, shared with other jobs while measured (load average "
        f"{load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end), Python "
        f"{platform.python_version()}. Command: `{command}`. Synthetic shapes dataset: {args.num_images} images "
        f"of {args.image_size}×{args.image_size}, {paths.num_annotations} annotations (polygons, uncompressed and "
        f"compressed RLE, crowd), {paths.num_refs} refs, {paths.num_grefs} grefs.",
        "",
        f"Writing the synthetic dataset (images, instances.json, refs pickle, grefs json): {synth_s:.1f} s "
        f"({args.num_images / synth_s:.0f} images/s).",
        "",
        "### Record building (`text4seg.data.build.build`, grid 16, nearest; includes loading, mask decoding, "
        "encoding, writing the Arrow files of the save_to_disk layout)",
        "",
        "| source | num_proc | records | seconds (total) | records/s (total) | load s | records s (parallel part) "
        "| records/s (parallel part) | write s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, num_proc, total, seconds, phases in rows:
        if phases is None:
            lines.append(
                f"| {kind} | re-run, cache reused | {total} | {seconds:.2f} | {total / seconds:.0f} | | | | |"
            )
            continue
        lines.append(
            f"| {kind} | {num_proc} | {total} | {seconds:.2f} | {total / seconds:.0f} | {phases['load']:.2f} "
            f"| {phases['records']:.2f} | {total / phases['records']:.0f} | {phases['write']:.2f} |"
        )
    lines += [
        "",
        "coco = three tasks per image (category masks, numbered instances, semantic questions: all / subset / "
        "with absent classes). `num_proc` parallelises the records phase (mask decoding, grids, text and "
        "the conversion to Arrow, each worker sending its chunk as Arrow bytes); loading, writing the Arrow "
        "files and storing each image once run in the main process. A speed-up from 2 "
        "processes needs 2 free cores, which this shared machine did not have (see the load average).",
        "",
        "Where the records-phase time goes (refcoco, `build_records` only, CPU seconds from `os.times`): with 2 "
        "processes the workers do the mask and text work and the main process only gathers results, so the wall "
        "time falls only as far as free cores allow.",
        "",
        "| num_proc | wall s | CPU s, main process | CPU s, workers |",
        "|---|---|---|---|",
        *[f"| {n} | {wall:.2f} | {main:.2f} | {workers:.2f} |" for n, wall, main, workers in cpu_rows],
        "",
        "### Images stored once (default) or embedded in every record (`--image-store embed`)",
        "",
        "Bytes of the build folder's files (stored images counted in full, though hard-linked to the sources). "
        "Embedded: `save_to_disk` stores each record's image bytes, so an image with several sentences or "
        "questions is stored that many times. Folder (the default): each image once in OUT/images, records "
        "hold paths relative to OUT (read back with `text4seg.data.load_records`). "
        f"Source images: {_folder_bytes(paths.images) / 2**20:.1f} MiB.",
        "",
        "| source | records | images stored | embedded MiB | folder MiB | ratio | embedded build s |",
        "|---|---|---|---|---|---|---|",
        *storage_rows,
        "",
        f"### Answer length in tokens (held-out val+test answers, random sample of n = {len(held_out)})",
        "",
        f"Byte-level BPE tokenizer (`tokenizers`, vocab 4096) trained here on {len(corpus)} texts from "
        f"{len(train)} train records (their R-RLE answer, per-cell answer and question, grid 16). Whole answers: sentence + "
        "`<seg>…</seg>`. Per-cell = `grid_to_cell_text`, one label per cell, the uncompressed baseline. "
        f"Re-made 16×16 answers equal the built records' answers: {same_as_records}.",
        "",
        "| grid | R-RLE mean | median | p95 | max | per-cell mean | median | p95 | max | per-cell / R-RLE (mean) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for grid, (rle, cell) in lengths.items():
        lines.append(
            f"| {grid}×{grid} | {_stats(rle)} | {_stats(cell)} | {np.mean(cell) / np.mean(rle):.1f}× |"
        )
    lines += ["", "Histogram at 16×16 (answers per token-length bin):", ""]
    lines += _histogram(*lengths[16])
    lines.append("")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + _kept_section())
    print("\n".join(lines))


BYTES_SECTION = "### Bytes on disk per build at 640×480"
"""The section `--bytes` writes (the issue's storage goal); kept when the main run rewrites the file."""

CPU_SECTION = "### CPU time per sentence"
"""The section bench/bench_build_cpu.py's figures go in: kept as it is when this script rewrites the file."""

KEPT_SECTIONS = (BYTES_SECTION, CPU_SECTION)


def _section(text: str, heading: str) -> str:
    """The section of ``text`` opened by ``heading``, up to the next kept section or the end ('' if none)."""
    start = text.find(heading)
    if start < 0:
        return ""
    ends = [text.find(other, start + 1) for other in KEPT_SECTIONS if other != heading]
    end = min([e for e in ends if e > start] or [len(text)])
    return text[start:end].rstrip("\n") + "\n"


def _kept_section(replace: dict[str, str] | None = None) -> str:
    """The kept sections of the current file, in KEPT_SECTIONS order; ``replace`` gives new text for some."""
    text = OUT.read_text() if OUT.exists() else ""
    kept = [(replace or {}).get(h) or _section(text, h) for h in KEPT_SECTIONS]
    return "".join("\n" + k for k in kept if k)


# -- bytes on disk: the default layout (each image once) against embedded images ----------------------
def _cli(args: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + sys) of one `text4seg` command, run as a fresh process."""
    import resource

    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run([sys.executable, "-m", "text4seg", *args], check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return time.perf_counter() - start, cpu


def _bytes(folder: Path) -> tuple[int, int]:
    """(bytes of every file in ``folder``, bytes of the files not hard-linked elsewhere: what it adds to disk)."""
    total = own = 0
    for path in folder.rglob("*"):
        if path.is_file():
            info = path.stat()
            total += info.st_size
            own += info.st_size if info.st_nlink == 1 else 0
    return total, own


def _bytes_row(kind: str, default: Path, embed: Path) -> tuple[str, float]:
    report = json.loads((default / kind / "build_report.json").read_text())
    sources = report["images_bytes"] + sum(Path(p).stat().st_size for p in report["inputs"])
    (once, added), (embedded, _) = _bytes(default / kind), _bytes(embed / kind)
    records = once - _bytes(default / kind / "images")[0]
    mib = 2**20
    row = (
        f"| {kind} | {report['records_total']} | {report['images_stored']} | {report['images_bytes'] / mib:.1f} "
        f"| {(sources - report['images_bytes']) / mib:.1f} | {once / mib:.1f} | {records / mib:.1f} "
        f"| {added / mib:.1f} | {once / sources:.2f}× | {embedded / mib:.1f} | {embedded / sources:.2f}× |"
    )
    return row, once / sources


def bytes_section(num_images: int, width: int, height: int) -> str:
    """Build the synthetic set twice through the CLI (default layout, then ``--image-store embed``), measure
    the folders against the source images and annotation files, delete them; the section's markdown."""
    work = WORK.parent / "data_bytes"
    shutil.rmtree(work, ignore_errors=True)
    size = ["--num-images", str(num_images), "--image-size", str(width), str(height), "--quiet"]
    load = os.getloadavg()[0]
    took = {
        "default": _cli(["build", "synthetic", *size, "--out", str(work / "default")]),
        "embed": _cli(["build", "synthetic", *size, "--image-store", "embed", "--out", str(work / "embed")]),
    }
    wall = {name: f"{w:.0f} s wall, {cpu:.0f} s CPU" for name, (w, cpu) in took.items()}
    source = work / "default" / "source"
    rows = [_bytes_row(kind, work / "default", work / "embed") for kind in ("coco", "refcoco", "grefcoco")]
    images_mib = _bytes(source / "images")[0] / 2**20
    shutil.rmtree(work)
    goal = "met" if max(ratio for _, ratio in rows) <= 1.2 else "NOT met"
    lines = [
        BYTES_SECTION,
        "",
        f"Machine: {_cpu()}, {os.cpu_count()} cores, shared (load average {load:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end: wall times measure the neighbours as much as the build, CPU "
        "time (user + sys of the command) less so; both include drawing the synthetic set; bytes do not depend "
        "on load). Commands "
        "(`bench/bench_data.py --bytes`, the built folders deleted after measuring):",
        "",
        "```",
        f"text4seg build synthetic --num-images {num_images} --image-size {width} {height} --out W/default"
        f"            # {wall['default']}",
        f"text4seg build synthetic --num-images {num_images} --image-size {width} {height} --image-store embed "
        f"--out W/embed   # {wall['embed']}",
        "```",
        "",
        f"Source images of the synthetic set: {images_mib:.1f} MiB. Per build: the images it stores "
        "(`images_bytes` of its report) and its annotation files (the masks: instances json, refs pickle, grefs "
        "json); the default folder's bytes count the stored images in full (`OUT/images`, hard links to the "
        "sources here, so the disk gains only the 'added' column); records = the Arrow files and metadata. "
        "Ratio = folder bytes / (images + annotations); the issue's goal is at most 1.2×: "
        f"**{goal}** for every build.",
        "",
        "| build | records | images | images MiB | annotations MiB | default MiB | of which records MiB "
        "| added to disk MiB | default ratio | embed MiB | embed ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[row for row, _ in rows],
        "",
    ]
    return "\n".join(lines)


def main_bytes(args: argparse.Namespace) -> None:
    section = bytes_section(args.num_images, *args.bytes_size)
    text = OUT.read_text() if OUT.exists() else "## Data\n"
    head = text
    for heading in KEPT_SECTIONS:
        cut = head.find(heading)
        head = head[:cut] if cut >= 0 else head
    OUT.write_text(head.rstrip("\n") + "\n" + _kept_section({BYTES_SECTION: section}))
    print(section)


if __name__ == "__main__":
    main()
