"""Semantic (multi-class) descriptors: answer length by grid and class count, and the grammar's cost with
the real open-vocabulary class lists (ADE20K-150, COCO-Stuff-171).

Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_semantic.py` (or `make bench`). Writes
bench/results/semantic.md.

Tokens are counted with a 32k byte-level BPE trained here on transformers' sources (`large_tokenizer`
of bench_infer.py: real checkpoints' tokenizers cannot be downloaded here). Label maps are synthetic:
k classes as Voronoi regions of a 512×512 image (smooth, photo-like region counts per row).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_infer import large_tokenizer  # noqa: E402

import text4seg as t4s  # noqa: E402
from text4seg.data.classnames import ADE20K_150, COCO_STUFF_BY_VALUE  # noqa: E402
from text4seg.infer.constrain import GrammarCompiler  # noqa: E402

OUT = Path(__file__).parent / "results" / "semantic.md"
COCO_STUFF_171 = tuple(n for n in COCO_STUFF_BY_VALUE if n)


def voronoi_map(k: int, seed: int, side: int = 512) -> np.ndarray:
    """A side×side label map of `k` classes (values 1..k), each a Voronoi cell of a random site."""
    rng = np.random.default_rng(seed)
    sites = rng.uniform(0, side, (k, 2))
    ys, xs = np.mgrid[0:side, 0:side]
    best = np.full((side, side), np.inf)
    out = np.zeros((side, side), dtype=np.int32)
    for i, (y, x) in enumerate(sites, start=1):
        d = (ys - y) ** 2 + (xs - x) ** 2
        closer = d < best
        out[closer], best[closer] = i, d[closer]
    return out


def answer_for(label_map: np.ndarray, names: list[str], grid: int) -> str:
    fmt = t4s.TEXT4SEG.with_grid(grid)
    text = t4s.encode_label_map(label_map, ["others", *names], fmt=fmt)
    return t4s.format_answer("Here is the semantic segmentation.", text, fmt)


def token_table(tokenizer) -> list[str]:
    lines = [
        "| grid | classes present | characters | tokens | tokens, cell by cell (no RLE) |",
        "|---|---|---|---|---|",
    ]
    for grid in (16, 24, 32):
        for k in (5, 20, 150):
            names = list(ADE20K_150[:k])
            label_map = voronoi_map(k, seed=k)
            answer = answer_for(label_map, names, grid)
            fmt = t4s.TEXT4SEG.with_grid(grid)
            cells = t4s.grid_to_cell_text(t4s.label_map_to_grid(label_map, grid), ["others", *names], fmt)
            n_tokens = len(tokenizer.encode(answer, add_special_tokens=False))
            n_cells = len(tokenizer.encode(cells, add_special_tokens=False))
            lines.append(f"| {grid}×{grid} | {k} | {len(answer):,} | {n_tokens:,} | {n_cells:,} |")
    return lines


def walk(compiled, ids: list[int]) -> tuple[float, int, int]:
    """Engine µs per mask step, forward passes with jump-forward, and tokens, for one answer."""
    matcher = compiled.matcher()
    bitmask = np.zeros((compiled.vocab_size + 31) // 32, dtype=np.int32)
    spent, passes, i = 0.0, 0, 0
    while i < len(ids):
        started = time.perf_counter()
        matcher.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes)
        spent += time.perf_counter() - started
        passes += 1
        if not matcher.consume_token(ids[i]):
            raise RuntimeError(f"answer left the grammar: {matcher.get_error()}")
        i += 1
        forced = matcher.compute_ff_tokens() if i < len(ids) else []
        if forced and ids[i : i + len(forced)] == forced:
            matcher.consume_tokens(forced)
            i += len(forced)
    return 1e6 * spent / passes, passes, len(ids)


def grammar_table(tokenizer) -> list[str]:
    lines = [
        "| class list | grid | compile (ms) | mask (µs/step) | tokens | forward passes with jump-forward |",
        "|---|---|---|---|---|---|",
    ]
    for name, classes in (("ADE20K-150", ADE20K_150), ("COCO-Stuff-171", COCO_STUFF_171)):
        for grid in (16, 32):
            fmt = t4s.TEXT4SEG.with_grid(grid)
            compiler = GrammarCompiler(tokenizer)
            compiled = compiler.compile(fmt, ["others", *classes])
            label_map = voronoi_map(12, seed=grid)
            answer = answer_for(label_map, list(classes[:12]), grid)
            ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
            step_us, passes, n = walk(compiled, ids)
            lines.append(
                f"| {name} | {grid}×{grid} | {1000 * compiled.compile_s:.0f} | {step_us:.0f} | {n:,} | "
                f"{passes:,} ({100 * (1 - passes / n):.0f} % fewer) |"
            )
    return lines


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    started = time.perf_counter()
    tokenizer = large_tokenizer()
    lines = [
        "## Semantic descriptors (many classes)",
        "",
        f"Machine: {platform.machine()}, {platform.system()}, Python {platform.python_version()}, "
        "`OMP_NUM_THREADS=1 .venv/bin/python bench/bench_semantic.py`. Tokenizer: a 32k byte-level BPE "
        "trained here (real checkpoints' tokenizers cannot be downloaded). Label maps: k classes as "
        "Voronoi regions of a 512×512 image, named with the first k ADE20K classes.",
        "",
        "### Answer length",
        "",
        *token_table(tokenizer),
        "",
        "### Grammar over the whole open-vocabulary class list (llguidance)",
        "",
        "The question names every class; the answer (12 classes present) is walked through the grammar. "
        "Compile happens once per class list and grid (then cached); the mask time is paid per decoding "
        "step, against a forward pass of tens of milliseconds for a 2-8B model on a GPU.",
        "",
        *grammar_table(tokenizer),
        "",
        f"Bench time: {time.perf_counter() - started:.0f} s.",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
