"""Inference figures: tokens and model forward passes per mask, free vs constrained vs constrained +
jump-forward, and time per mask on a tiny model on the CPU; grammar engine costs (llguidance, and
xgrammar when it is importable, for comparison).

Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_infer.py [--masks 8] [--grid 16]`
(or `make bench`). Writes bench/results/infer.md.

Three views:
1. Reference answers: the canonical answer text for masks of synthetic scenes, tokenized with the
   tiny models' BPE, walked through the grammar. A model that writes exactly these answers needs one
   forward pass per token without jump-forward, and one per non-forced token with it.
2. A random-weight tiny Qwen2-VL generating for real: random weights never stop on their own, so free
   decoding runs to its token cap; under the grammar every answer ends and parses strictly.
3. The grammar engine: compile time per (grid, label count), engine time per mask step.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import text4seg as t4s
from text4seg.data.synthetic import generate_sample
from text4seg.infer.constrain import GrammarCompiler
from text4seg.infer.segmenter import Segmenter
from text4seg.models.tiny import build_tiny, build_tokenizer
from text4seg.protocol.templates import REFER_ANSWERS

OUT = Path(__file__).parent / "results" / "infer.md"
LARGER = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "vision_hidden_size": 64}
"""`build_tiny` overrides for the larger model (a few million parameters)."""


def reference_answers(n: int, grid: int) -> list[tuple[str, str]]:
    """(expression, canonical answer) for the targets of `n` synthetic scenes, at `grid`."""
    fmt = t4s.TEXT4SEG.with_grid(grid)
    pairs = []
    seed = 0
    while len(pairs) < n:
        sample = generate_sample(seed, image_size=256)
        seed += 1
        for expr in sample.expressions:
            if not expr.targets:
                continue
            mask = np.any([sample.shapes[i].mask for i in expr.targets], axis=0)
            sentence = expr.sentences[0]
            text = t4s.encode_mask(mask, sentence, fmt=fmt)
            answer = t4s.format_answer(REFER_ANSWERS[0].format(expression=sentence), text, fmt)
            pairs.append((sentence, answer))
            if len(pairs) == n:
                break
    return pairs


def walk_reference(compiler: GrammarCompiler, tokenizer, grid: int, pairs) -> dict[str, float]:
    """Tokens, forced tokens and forward passes (with/without jump-forward) for reference answers."""
    fmt = t4s.TEXT4SEG.with_grid(grid)
    tokens, passes_jf, mismatched, engine_s, steps = [], [], 0, 0.0, 0
    bitmask = np.zeros((compiler.vocab_size + 31) // 32, dtype=np.int32)
    for expression, answer in pairs:
        matcher = compiler.compile(fmt, ["others", expression]).matcher()
        ref = tokenizer.encode(answer, add_special_tokens=False) + [compiler.eos_ids[0]]
        i = passes = 0
        while i < len(ref):
            started = time.perf_counter()
            matcher.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes)
            engine_s += time.perf_counter() - started
            steps += 1
            passes += 1
            if not matcher.consume_token(ref[i]):
                raise RuntimeError(f"reference answer left the grammar: {matcher.get_error()}")
            i += 1
            forced = matcher.compute_ff_tokens() if i < len(ref) else []
            if forced and ref[i : i + len(forced)] == forced:
                assert matcher.consume_tokens(forced)
                i += len(forced)
            elif forced:
                mismatched += 1
        tokens.append(len(ref))
        passes_jf.append(passes)
    return {
        "tokens": float(np.mean(tokens)),
        "passes_plain": float(np.mean(tokens)),
        "passes_jf": float(np.mean(passes_jf)),
        "mismatch": mismatched,
        "engine_us": 1e6 * engine_s / max(steps, 1),
    }


def run_model(segmenter: Segmenter, pairs, mode: str, batch_size: int, repeats: int = 2) -> dict[str, float]:
    """Generate for every pair in one mode; per-mask means (wall time: best of `repeats` runs, as the
    machine is shared)."""
    constrained = mode != "free"
    wall = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        results = segmenter.segment_batch(
            pairs, batch_size=batch_size, constrained=constrained, jump_forward=mode == "constrained+jump"
        )
        wall = min(wall, time.perf_counter() - started)
    batches = {}
    for k, r in enumerate(results):
        batches[k // batch_size] = r.forward_passes
    parsed = 0
    for r in results:
        try:
            t4s.decode(r.text, segmenter.fmt, strict=True, labels=r.labels)
            parsed += 1
        except t4s.DescriptorParseError:
            pass
    return {
        "tokens": float(np.mean([r.new_tokens for r in results])),
        "passes": sum(batches.values()) / len(results),
        "parsed": parsed / len(results),
        "ms": 1000.0 * wall / len(results),
        "engine_ms": 1000.0
        * sum(r.timings.get("mask_engine", 0.0) for r in results[::batch_size])
        / len(results),
    }


def trained_section(args: argparse.Namespace) -> list[str]:
    """Free vs constrained vs jump-forward on a trained model (e.g. `text4seg demo`'s demo_out/model)."""
    segmenter = Segmenter.from_pretrained(
        args.trained, device="cpu", grid=args.grid, answer_sentences=args.trained_sentences
    )
    samples = [generate_sample(5000 + i, image_size=128) for i in range(args.trained_masks)]
    pairs = [(s.image, s.expressions[0].sentences[0]) for s in samples]
    n_params = sum(p.numel() for p in segmenter.model.parameters())
    lines = [
        "",
        f"### A trained model: `{args.trained}` ({type(segmenter.model).__name__}, {n_params / 1e6:.2f}M "
        f"parameters), {args.trained_masks} synthetic 128 px scenes, batch 1",
        "",
        "| mode | tokens / mask | forward passes / mask | well-formed | foreground cells / mask | ms / mask |",
        "|---|---|---|---|---|---|",
    ]
    by_mode = {}
    for mode in ("free", "constrained", "constrained+jump"):
        started = time.perf_counter()
        results = segmenter.segment_batch(
            pairs, batch_size=1, constrained=mode != "free", jump_forward=mode == "constrained+jump"
        )
        wall = (time.perf_counter() - started) / len(results)
        by_mode[mode] = results
        lines.append(
            f"| {mode} | {np.mean([r.new_tokens for r in results]):.0f} | "
            f"{np.mean([r.forward_passes for r in results]):.0f} | {sum(r.ok for r in results)}/{len(results)} | "
            f"{np.mean([(r.grid != 0).sum() for r in results]):.1f} | {1000 * wall:.0f} |"
        )
        print(lines[-1], flush=True)
    repairs = sorted({rep.kind for r in by_mode["free"] for rep in r.repairs})
    lines += [
        "",
        f"Repairs lenient decoding made to the free answers: {repairs or 'none'}. First answer, free: "
        f"`{by_mode['free'][0].text[-80:]!r}`; constrained: `{by_mode['constrained'][0].text[-80:]!r}` (last "
        "80 characters).",
    ]
    return lines


def large_tokenizer(vocab_size: int = 32000):
    """A byte-level BPE of `vocab_size` tokens trained on transformers' own model sources (a realistic
    vocabulary size for mask timing; real checkpoints' tokenizers cannot be downloaded here)."""
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    root = Path(transformers.__file__).parent / "models"
    files = sorted(str(p) for p in root.glob("*/modeling_*.py"))[:1500]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(files, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def engine_table(tokenizers: list[tuple[str, object]]) -> list[str]:
    """Compile time and per-step engine time, llguidance vs xgrammar (if importable)."""
    try:
        import xgrammar as xgr
    except ImportError:
        xgr = None
    from importlib.metadata import version

    versions = f"llguidance {version('llguidance')}" + (
        f", xgrammar {version('xgrammar')} (from {Path(xgr.__file__).parent.parent})" if xgr else ""
    )
    lines = [
        f"Engines: {versions}.",
        "",
        "| vocabulary | grid | labels | llguidance compile (ms) | llguidance mask (µs/step) | "
        + ("xgrammar compile (ms) | xgrammar mask (µs/step) |" if xgr else "xgrammar |"),
        "|---|---|---|---|---|" + ("---|---|" if xgr else "---|"),
    ]
    rng = np.random.default_rng(0)
    for name, tokenizer in tokenizers:
        vocab = len(tokenizer)
        if xgr is not None:
            info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
            xcomp = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        for grid, n_labels in ((16, 2), (24, 2), (32, 2), (16, 5), (32, 5), (16, 10)):
            labels = ["others"] + [f"class {i}" for i in range(n_labels - 1)]
            fmt = t4s.TEXT4SEG.with_grid(grid)
            compiled = GrammarCompiler(tokenizer).compile(fmt, labels)
            cells = rng.integers(0, n_labels, (grid, grid))
            cells[:, : grid // 2] = 0
            answer = t4s.format_answer("Here it is.", t4s.grid_to_text(cells, labels, fmt), fmt)
            ids = tokenizer.encode(answer, add_special_tokens=False) + [tokenizer.eos_token_id]
            matcher = compiled.matcher()
            bitmask = np.zeros((compiled.vocab_size + 31) // 32, dtype=np.int32)
            spent = 0.0
            for tok in ids:
                started = time.perf_counter()
                matcher.unsafe_compute_mask_ptr(bitmask.ctypes.data, bitmask.nbytes)
                spent += time.perf_counter() - started
                matcher.consume_token(tok)
            row = (
                f"| {name} | {grid}×{grid} | {n_labels} | {1000 * compiled.compile_s:.1f} | "
                f"{1e6 * spent / len(ids):.0f} |"
            )
            if xgr is not None:
                started = time.perf_counter()
                xg = xcomp.compile_grammar(_lark_to_ebnf(compiled.lark))
                x_compile = time.perf_counter() - started
                xm = xgr.GrammarMatcher(xg)
                xbits = xgr.allocate_token_bitmask(1, info.vocab_size)
                spent = 0.0
                for tok in ids:
                    started = time.perf_counter()
                    xm.fill_next_token_bitmask(xbits)
                    spent += time.perf_counter() - started
                    if not xm.accept_token(tok):
                        raise RuntimeError("xgrammar rejected a valid answer")
                row += f" {1000 * x_compile:.1f} | {1e6 * spent / len(ids):.0f} |"
            else:
                row += " not installed |"
            lines.append(row)
    return lines


def _lark_to_ebnf(lark: str) -> str:
    """Our Lark grammar in xgrammar's EBNF (same rules; `start` is `root`, the regex becomes a class)."""
    out = []
    for line in lark.strip().splitlines():
        name, body = line.split(": ", 1)
        name = "root" if name == "start" else name
        if body.startswith("/") and body.endswith("/"):
            body = body[1:-1]
        out.append(f"{name} ::= {body}")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=8, help="masks per mode for the random model (8)")
    parser.add_argument("--grid", type=int, default=16, help="descriptor grid for the random model (16)")
    parser.add_argument("--free-cap", type=int, default=600, help="token cap for free decoding (600)")
    parser.add_argument("--arch", default="qwen2_vl", help="tiny architecture (qwen2_vl)")
    parser.add_argument("--trained", default=None, help="also measure this trained model folder")
    parser.add_argument("--trained-masks", type=int, default=12, help="scenes for --trained (12)")
    parser.add_argument(
        "--trained-sentences",
        default="templates",
        choices=("templates", "free", "none"),
        help="see Segmenter",
    )
    parser.add_argument("--larger-masks", type=int, default=4, help="masks for the larger model (4; 0 skips)")
    args = parser.parse_args()
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    tokenizer = build_tokenizer(args.arch)
    compiler = GrammarCompiler(tokenizer)

    lines = [
        "## Inference: constrained decoding and jump-forward",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (torch threads: {threads}), "
        f"Python {platform.python_version()}, torch {torch.__version__}.",
        "Command: `"
        + "".join(f"{k}={os.environ[k]} " for k in ("OMP_NUM_THREADS", "PYTHONPATH") if os.environ.get(k))
        + " ".join([".venv/bin/python bench/bench_infer.py", *sys.argv[1:]])
        + f"` (load average at start: {os.getloadavg()[0]:.1f}).",
        "",
        "### Reference answers (what a well-trained model writes), tiny BPE (640 tokens)",
        "",
        "Canonical answers for 40 targets of synthetic scenes, walked through the grammar: forward passes per "
        "mask without jump-forward (one per token) and with it (one per token the grammar does not force).",
        "",
        "| grid | tokens / mask | passes, constrained | passes, + jump-forward | saved | engine µs / step |",
        "|---|---|---|---|---|---|",
    ]
    for grid in (16, 24, 32):
        ref = walk_reference(compiler, tokenizer, grid, reference_answers(40, grid))
        saved = 1 - ref["passes_jf"] / ref["passes_plain"]
        lines.append(
            f"| {grid}×{grid} | {ref['tokens']:.0f} | {ref['passes_plain']:.0f} | {ref['passes_jf']:.0f} | "
            f"{100 * saved:.0f}% | {ref['engine_us']:.0f} |"
        )
        if ref["mismatch"]:
            lines.append(
                f"|  | ({ref['mismatch']} forced stretches tokenized differently from the reference) |"
            )

    model, processor = build_tiny(args.arch, seed=0)
    segmenter = Segmenter(model, processor, grid=args.grid)
    samples = [generate_sample(1000 + i, image_size=64) for i in range(args.masks)]
    pairs = [(s.image, s.expressions[0].sentences[0]) for s in samples]
    n_params = sum(p.numel() for p in model.parameters())
    lines += [
        "",
        f"### Random-weight tiny {args.arch} ({n_params / 1e6:.2f}M parameters, 32 px), grid "
        f"{args.grid}×{args.grid}, {args.masks} masks",
        "",
        f"Greedy decoding. Free decoding is capped at {args.free_cap} new tokens (random weights never stop on "
        "their own). Per mask: generated tokens, model forward passes (batch passes / batch size), share of "
        "answers that `decode(strict=True)` accepts, wall time (best of 2 runs) and engine time (mask computation).",
        "",
        "| mode | batch | tokens / mask | forward passes / mask | strict parse | ms / mask | engine ms / mask |",
        "|---|---|---|---|---|---|---|",
    ]
    free = Segmenter(model, processor, grid=args.grid, constrained=False, max_new_tokens=args.free_cap)
    for mode, batch in (
        ("free", 1),
        ("constrained", 1),
        ("constrained+jump", 1),
        ("constrained", 4),
        ("constrained+jump", 4),
    ):
        runner = free if mode == "free" else segmenter
        stats = run_model(runner, pairs, mode, batch)
        lines.append(
            f"| {mode} | {batch} | {stats['tokens']:.0f} | {stats['passes']:.0f} | {100 * stats['parsed']:.0f}% | "
            f"{stats['ms']:.0f} | {stats['engine_ms']:.1f} |"
        )
        print(lines[-1], flush=True)

    if args.larger_masks > 0:
        model, processor = build_tiny(args.arch, seed=0, **LARGER)
        segmenter = Segmenter(model, processor, grid=args.grid)
        n_params = sum(p.numel() for p in model.parameters())
        lines += [
            "",
            f"### A larger random {args.arch} ({n_params / 1e6:.2f}M parameters: text hidden "
            f"{LARGER['hidden_size']} × {LARGER['num_layers']} layers), grid {args.grid}×{args.grid}, "
            f"{args.larger_masks} masks, batch 1, one run",
            "",
            "Where the forward pass dominates, the time saved follows the passes saved.",
            "",
            "| mode | tokens / mask | forward passes / mask | strict parse | ms / mask |",
            "|---|---|---|---|---|",
        ]
        for mode in ("constrained", "constrained+jump"):
            stats = run_model(segmenter, pairs[: args.larger_masks], mode, 1, repeats=1)
            lines.append(
                f"| {mode} | {stats['tokens']:.0f} | {stats['passes']:.0f} | {100 * stats['parsed']:.0f}% | "
                f"{stats['ms']:.0f} |"
            )
            print(lines[-1], flush=True)

    if args.trained:
        lines += trained_section(args)

    lines += [
        "",
        "### Grammar engine (compile once per grid × label set, then cached; mask time per decoding step)",
        "",
        *engine_table([(f"tiny BPE ({len(tokenizer)})", tokenizer), ("BPE 32k", large_tokenizer())]),
        "",
        "The 32k BPE is trained by the bench on transformers' model sources (real checkpoints' tokenizers "
        "cannot be downloaded here). xgrammar is not a dependency; the columns appear when it is importable "
        "(`pip install xgrammar`).",
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
