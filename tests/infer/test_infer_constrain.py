"""Grammar-constrained decoding: the grammar's language, generation under it, jump-forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LogitsProcessorList

import text4seg as t4s
from text4seg.codec import LabelError
from text4seg.infer.constrain import (
    DescriptorLogitsProcessor,
    GrammarCompiler,
    compiler_for,
    descriptor_lark,
    jump_forward_generate,
)

SENTENCES = ("Here is the object.", "Nothing here.")


@pytest.fixture(scope="module")
def compiler(tokenizer):
    return GrammarCompiler(tokenizer)


def accepts(compiled, tokenizer, text: str) -> bool:
    """Drive a fresh matcher token by token over `text` then EOS; True if every token was accepted."""
    matcher = compiled.matcher()
    for tok in tokenizer.encode(text, add_special_tokens=False):
        if not matcher.consume_token(tok):
            return False
    return matcher.consume_token(tokenizer.eos_token_id) and matcher.is_stopped()


def random_grid(rng: np.random.Generator, rows: int, cols: int, n_labels: int) -> np.ndarray:
    """A grid with blobs and single cells, so rows have from one run to one run per cell."""
    grid = rng.integers(0, n_labels, (rows, cols))
    smooth = rng.random((rows, 1)) < 0.5
    return np.where(smooth, grid[:, :1], grid).astype(np.int32)


LABEL_SETS = [
    ["others", "red circle"],
    ["others", "cat", "cat toy", "dog"],
    ["others", "person 1", "person 2", "person 3", "table", "chair"],
]


@pytest.mark.parametrize("labels", LABEL_SETS, ids=["binary", "prefix-labels", "six"])
def test_grammar_accepts_every_valid_descriptor(compiler, tokenizer, labels):
    rng = np.random.default_rng(len(labels))
    for _ in range(25):
        rows, cols = (int(v) for v in rng.integers(1, 13, 2))
        fmt = t4s.TEXT4SEG.with_grid((rows, cols))
        compiled = compiler.compile(fmt, labels, sentences=SENTENCES)
        grid = random_grid(rng, rows, cols, len(labels))
        text = t4s.grid_to_text(grid, labels, fmt)
        sentence = SENTENCES[int(rng.integers(2))] if rng.random() < 0.7 else ""
        answer = t4s.format_answer(sentence, text, fmt)
        assert accepts(compiled, tokenizer, answer), answer
        # and a free sentence under the default (free) grammar
        free = compiler.compile(fmt, labels)
        assert accepts(free, tokenizer, t4s.format_answer("Sure, it is here!", text, fmt))


def _rows(*rows: str) -> str:
    return "<seg>" + "\n ".join(rows) + "\n</seg>"


MALFORMED = {
    "row too short": _rows("others *4", "others *3"),
    "row too long": _rows("others *4", "others *2| cat *3"),
    "too few rows": "<seg>others *4\n</seg>",
    "too many rows": _rows("others *4", "others *4", "others *4"),
    "unknown label": _rows("others *4", "dog *4"),
    "zero count": _rows("others *4", "cat *0| others *4"),
    "leading zero": _rows("others *4", "others *04"),
    "repeated label": _rows("others *2| others *2", "others *4"),
    "missing end": "<seg>others *4\n others *4</seg>",
    "missing close tag": "<seg>others *4\n others *4\n",
    "text after close": _rows("others *4", "others *4") + " ok",
    "second block": _rows("others *4", "others *4") + _rows("others *4", "others *4"),
    "wrong separator": "<seg>others *4\n others *1 | cat *3\n</seg>",
    "sentence not in list": "Hello.\n" + _rows("others *4", "others *4"),
    "two-line sentence": "Here is the object.\nNothing here.\n" + _rows("others *4", "others *4"),
    "no tags": "others *4\n others *4\n",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_grammar_rejects_malformed(compiler, tokenizer, name):
    fmt = t4s.TEXT4SEG.with_grid((2, 4))
    compiled = compiler.compile(fmt, ["others", "cat"], sentences=SENTENCES)
    assert accepts(compiled, tokenizer, _rows("others *1| cat *3", "cat *4"))
    assert not accepts(compiled, tokenizer, MALFORMED[name])


def test_repeated_labels_allowed_without_merge_runs(compiler, tokenizer):
    fmt = t4s.TEXT4SEG.with_grid((2, 4))
    text = _rows("others *2| others *2", "others *4")
    loose = compiler.compile(fmt, ["others", "cat"], merge_runs=False, sentences=())
    assert accepts(loose, tokenizer, text)
    assert t4s.decode(text, fmt, strict=True).grid.sum() == 0


def test_many_labels_fall_back_to_a_compact_grammar(compiler, tokenizer):
    labels = ["others"] + [f"class {i}" for i in range(60)]
    fmt = t4s.TEXT4SEG.with_grid(32)
    compiled = compiler.compile(fmt, labels, sentences=())
    assert "RUN:" in compiled.lark  # no per-label state
    grid = random_grid(np.random.default_rng(0), 32, 32, len(labels))
    assert accepts(compiled, tokenizer, t4s.format_answer("", t4s.grid_to_text(grid, labels, fmt), fmt))


def test_grammar_checks_labels_and_sentences():
    with pytest.raises(LabelError):
        descriptor_lark(t4s.TEXT4SEG, ["others", "a *b"])
    with pytest.raises(ValueError, match="background"):
        descriptor_lark(t4s.TEXT4SEG, ["cat", "dog"])
    with pytest.raises(ValueError, match="lines"):
        descriptor_lark(t4s.TEXT4SEG, ["others", "cat"], sentences=["two\nlines"])


def test_compiled_grammars_are_cached(tokenizer):
    compiler = compiler_for(tokenizer)
    assert compiler_for(tokenizer) is compiler
    fmt = t4s.TEXT4SEG.with_grid(8)
    first = compiler.compile(fmt, ["others", "cat"])
    assert compiler.compile(fmt, ["others", "cat"]) is first
    assert compiler.compile(fmt, ["others", "dog"]) is not first
    assert compiler.compile(fmt.with_grid(9), ["others", "cat"]) is not first


def test_tags_added_as_special_tokens_are_matched_by_id():
    from text4seg.models.tiny import build_tokenizer

    tok = build_tokenizer("qwen2_vl")
    tok.add_special_tokens({"additional_special_tokens": ["<seg>", "</seg>"]})
    open_id, close_id = tok.convert_tokens_to_ids(["<seg>", "</seg>"])
    compiled = GrammarCompiler(tok).compile(t4s.TEXT4SEG.with_grid(2), ["others", "cat"], sentences=())
    assert f"<[{open_id}]>" in compiled.lark and f"<[{close_id}]>" in compiled.lark
    ids = tok.encode("<seg>others *2\n cat *2\n</seg>", add_special_tokens=False)
    assert ids[0] == open_id and ids[-1] == close_id
    matcher = compiled.matcher()
    assert all(matcher.consume_token(i) for i in ids) and matcher.consume_token(tok.eos_token_id)


def _generate(model, tokenizer, grammars, *, jump: bool, **kwargs):
    tokenizer.padding_side = "left"
    prompts = ["Segment it please", "Where is the dog in this image?"][: len(grammars)]
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    proc = DescriptorLogitsProcessor(grammars)
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        out = model.generate(
            **enc,
            logits_processor=LogitsProcessorList([proc]),
            max_new_tokens=1500,
            pad_token_id=tokenizer.pad_token_id,
            custom_generate=jump_forward_generate if jump else None,
            **kwargs,
        )
    finally:
        handle.remove()
    texts = tokenizer.batch_decode(out[:, enc.input_ids.shape[1] :], skip_special_tokens=True)
    return out, texts, len(calls), proc


@pytest.mark.parametrize(
    "grid,labels",
    [((3, 5), ["others", "red circle"]), (6, ["others", "cat", "cat toy"]), ((7, 4), LABEL_SETS[2])],
)
def test_random_model_under_constraints_always_parses_strictly(text_model, tokenizer, grid, labels):
    fmt = t4s.TEXT4SEG.with_grid(grid)
    compiler = compiler_for(tokenizer, text_model.config.vocab_size)
    grammars = [compiler.compile(fmt, labels), compiler.compile(fmt, labels, sentences=SENTENCES)]
    for seed in range(3):
        torch.manual_seed(seed)
        _, texts, _, _ = _generate(
            text_model, tokenizer, grammars, jump=True, do_sample=True, temperature=1.5
        )
        for text in texts:
            descriptor = t4s.decode(text, fmt, strict=True, labels=labels)
            assert descriptor.grid.shape == fmt.grid


def test_jump_forward_gives_the_same_text_with_fewer_forward_passes(text_model, tokenizer):
    compiler = compiler_for(tokenizer, text_model.config.vocab_size)
    grammars = [
        compiler.compile(t4s.TEXT4SEG.with_grid(8), ["others", "red circle"], sentences=SENTENCES),
        compiler.compile(t4s.TEXT4SEG.with_grid(8), ["others", "cat", "dog"], sentences=()),
    ]
    plain, plain_texts, plain_calls, _ = _generate(
        text_model, tokenizer, grammars, jump=False, do_sample=False
    )
    fast, fast_texts, fast_calls, proc = _generate(
        text_model, tokenizer, grammars, jump=True, do_sample=False
    )
    assert torch.equal(plain, fast)
    assert plain_texts == fast_texts
    assert proc.stats.forced_tokens > 0
    assert fast_calls < plain_calls
    for text, labels in zip(fast_texts, (["others", "red circle"], ["others", "cat", "dog"]), strict=True):
        t4s.decode(text, t4s.TEXT4SEG.with_grid(8), strict=True, labels=labels)


def test_processor_follows_rewound_sequences(tokenizer):
    compiled = GrammarCompiler(tokenizer).compile(t4s.TEXT4SEG.with_grid(2), ["others", "cat"], sentences=())
    proc = DescriptorLogitsProcessor([compiled], prompt_length=1)
    good = tokenizer.encode("<seg>others *2\n cat", add_special_tokens=False)
    scores = torch.zeros(1, len(tokenizer))
    proc(torch.tensor([[0, *good]]), scores)
    proc(torch.tensor([[0, *good[:3]]]), scores)  # rewound: the matcher rolls back
    assert proc.tokens[0] == good[:3]
    out = proc(torch.tensor([[0, *good]]), scores.clone())
    allowed = torch.isfinite(out[0]).nonzero().flatten().tolist()
    assert allowed and all(
        tokenizer.decode([t]).startswith(" *") or tokenizer.decode([t]) == " " for t in allowed
    )


def test_labels_with_quotes_backslashes_and_unicode(compiler, tokenizer):
    labels = ["others", 'the "big" cat', "a\\b/c", "café crème", "dog 🐕", "x{1,2}"]
    fmt = t4s.TEXT4SEG.with_grid((3, 7))
    compiled = compiler.compile(fmt, labels, sentences=['He said "hi" \\ ok'])
    grid = random_grid(np.random.default_rng(1), 3, 7, len(labels))
    grid[0, :6] = np.arange(6)  # every label appears
    answer = t4s.format_answer('He said "hi" \\ ok', t4s.grid_to_text(grid, labels, fmt), fmt)
    assert accepts(compiled, tokenizer, answer)
    assert not accepts(compiled, tokenizer, answer.replace("café", "cafe"))


def test_jump_forward_respects_max_new_tokens(text_model, tokenizer):
    compiled = compiler_for(tokenizer, text_model.config.vocab_size).compile(
        t4s.TEXT4SEG.with_grid(8), ["others", "cat"], sentences=()
    )
    tokenizer.padding_side = "left"
    enc = tokenizer(["Segment the cat"], return_tensors="pt")
    for limit in (1, 2, 7):
        out = text_model.generate(
            **enc,
            logits_processor=LogitsProcessorList([DescriptorLogitsProcessor([compiled])]),
            max_new_tokens=limit,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            custom_generate=jump_forward_generate,
        )
        assert out.shape[1] - enc.input_ids.shape[1] == limit
