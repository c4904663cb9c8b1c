"""Grammar-constrained decoding: generation cannot leave the descriptor grammar.

For a `DescriptorFormat` (grid rows × cols) and a label list, `descriptor_lark` writes a grammar whose
language is exactly the well-formed answers: an optional answer sentence, then the open tag, exactly
`rows` rows whose run counts sum to exactly `cols` (a regular language: the state is the number of
cells left in the row, and, with `merge_runs`, the label of the previous run so that two neighbouring
runs never repeat a label, as in the canonical R-RLE the training data uses), only the given labels,
the close tag and end-of-sequence. Every constrained output therefore decodes with
`text4seg.decode(..., strict=True)`.

The grammar is compiled by llguidance (a maintained structured-generation engine) into a token
matcher. `DescriptorLogitsProcessor` is a `transformers.LogitsProcessor` that masks every token the
matcher rejects; when the grammar forces the next bytes (a separator, the row break, the only count
left) it allows only the canonical forced token, which is what the training text's tokenization
would contain. `jump_forward_generate`, passed to `model.generate(custom_generate=...)`, appends
those forced tokens without a model forward pass, feeding them to the model together with the next
token, so the text is identical and the number of forward passes smaller.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from text4seg.codec import TEXT4SEG, DescriptorFormat, check_labels
from text4seg.models import registry

DEFAULT_MAX_SENTENCE_CHARS = 120
"""Longest free answer sentence the grammar allows before the open tag (keeps bad models bounded)."""


MERGE_RUNS_BUDGET = 5_000
"""Largest labels·(labels-1)·cols for which the grammar also tracks the previous run's label."""


class ConstraintError(RuntimeError):
    """The grammar could not be compiled, or a sequence left it (a bug: the mask should prevent that)."""


def require_engine() -> Any:
    """The llguidance module, or an ImportError saying how to install it (a broken or stripped install)."""
    try:
        import llguidance
        import llguidance.hf
    except ImportError as err:
        raise ImportError(
            "grammar-constrained decoding needs llguidance: pip install llguidance "
            "(or pass constrained=False / --no-constrained)"
        ) from err
    return llguidance


# --------------------------------------------------------------------------------------------------
# Grammar text
# --------------------------------------------------------------------------------------------------


def _lit(text: str) -> str:
    """A Lark string literal for `text` (JSON escapes, which llguidance's Lark reader accepts)."""
    return json.dumps(text, ensure_ascii=False)


def descriptor_lark(
    fmt: DescriptorFormat,
    labels: Sequence[str],
    *,
    sentences: Sequence[str] | None = None,
    max_sentence_chars: int = DEFAULT_MAX_SENTENCE_CHARS,
    merge_runs: bool | None = None,
    tag_tokens: dict[str, int] | None = None,
) -> str:
    """The Lark grammar of a whole answer for `fmt` and `labels` (`labels[0]` is the background).

    `sentences`: None allows any one-line answer sentence of at most `max_sentence_chars` characters
    (or none) before the open tag; a list allows exactly one of those sentences (or none); an empty
    list allows none. `merge_runs` forbids two neighbouring runs of one label in a row (canonical
    R-RLE); None turns it on unless the label set is so large that the grammar would exceed
    `MERGE_RUNS_BUDGET` alternatives (the engine's symbol limit), as for many-class semantic prompts.
    `tag_tokens` maps a tag string to a single special token id, for tokenizers that added the tags as
    tokens.
    """
    labels = check_labels(labels, fmt)
    rows, cols = fmt.grid
    tag_tokens = tag_tokens or {}

    def tag(text: str) -> str:
        return f"<[{tag_tokens[text]}]>" if text in tag_tokens else _lit(text)

    lines: list[str] = []
    body = [f"r{cols}_n"]
    for _ in range(rows - 1):
        body += [_lit(fmt.row_sep), f"r{cols}_n"]
    if fmt.end:
        body.append(_lit(fmt.end))
    prefix = ""
    if sentences is None:
        if max_sentence_chars > 0:
            prefix = '(SENTENCE "\\n")? '
            lines.append(f"SENTENCE: /[^\\n<]{{1,{int(max_sentence_chars)}}}/")
    elif [s for s in sentences if s]:
        prefix = '(SENTENCE "\\n")? '
        choices = sorted({s for s in sentences if s})
        for s in choices:
            if "\n" in s:
                raise ValueError(f"answer sentence {s!r} spans several lines")
        lines.append("SENTENCE: " + " | ".join(_lit(s) for s in choices))
    start = f"start: {prefix}{tag(fmt.open_tag)} {' '.join(body)} {tag(fmt.close_tag)}"

    # One literal per label, carrying the count separator so that a label that is a prefix of
    # another ("cat", "cat toy") never leaves the lexer undecided.
    run_head = [_lit(label + fmt.count_sep) for label in labels]
    run_sep = _lit(fmt.run_sep)
    if merge_runs is None:
        merge_runs = len(labels) * (len(labels) - 1) * cols <= MERGE_RUNS_BUDGET
    if not merge_runs:
        lines.append("RUN: " + " | ".join(run_head))
    states = ["n", *range(len(labels))] if merge_runs else ["n"]
    for k in range(1, cols + 1):
        if merge_runs:
            for prev in states:
                alts = [f"{run_head[m]} c{k}_{m}" for m in range(len(labels)) if m != prev]
                lines.append(f"r{k}_{prev}: " + " | ".join(alts))
        else:
            lines.append(f"r{k}_n: RUN c{k}_n")
        for m in states[1:] if merge_runs else states:
            alts = [_lit(str(k))] + [f"{_lit(str(n))} {run_sep} r{k - n}_{m}" for n in range(1, k)]
            lines.append(f"c{k}_{m}: " + " | ".join(alts))
    return "\n".join([start, *lines]) + "\n"


# --------------------------------------------------------------------------------------------------
# Compilation and caching
# --------------------------------------------------------------------------------------------------


@dataclass
class CompiledGrammar:
    """A compiled descriptor grammar: hands out fresh matchers (deep copies of a compiled template)."""

    key: tuple
    lark: str
    template: Any  # llguidance.LLMatcher in its initial state
    compile_s: float
    labels: tuple[str, ...]
    fmt: DescriptorFormat
    vocab_size: int
    eos_ids: tuple[int, ...]

    def matcher(self) -> Any:
        """A new matcher at the start of the grammar."""
        return self.template.deep_copy()


def _single_token(tokenizer: Any, text: str) -> int | None:
    """The id of `text` if the tokenizer has it as one added (special) token, else None."""
    added = getattr(tokenizer, "added_tokens_encoder", None) or {}
    return added.get(text)


def eos_token_ids(tokenizer: Any, generation_config: Any = None) -> list[int]:
    """Stop ids for a tokenizer: `text4seg.models.registry.stop_token_ids` (the chat template's end of
    turn, the generation config's EOS ids, the tokenizer's EOS); ConstraintError when there is none."""
    try:
        return registry.stop_token_ids(tokenizer, generation_config)
    except ValueError as err:
        raise ConstraintError(str(err)) from err


class GrammarCompiler:
    """Compiles descriptor grammars for one tokenizer, caching them by (format, labels, options).

    `vocab_size` is the width of the model's logits (may exceed the tokenizer's length: ids beyond the
    tokenizer are always masked). `eos_ids` end the answer after the close tag.
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int | None = None,
        eos_ids: Sequence[int] | None = None,
        cache_size: int = 64,
    ):
        self.tokenizer = tokenizer
        self.eos_ids = list(eos_ids) if eos_ids else eos_token_ids(tokenizer)
        llguidance = require_engine()
        n_vocab = max(int(vocab_size or 0), len(tokenizer))
        started = time.perf_counter()
        self.ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab, eos_token=self.eos_ids)
        self.tokenizer_s = time.perf_counter() - started
        self.vocab_size = self.ll_tokenizer.vocab_size
        self._cache: OrderedDict[tuple, CompiledGrammar] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def compile(
        self,
        fmt: DescriptorFormat = TEXT4SEG,
        labels: Sequence[str] = ("others", "object"),
        *,
        sentences: Sequence[str] | None = None,
        max_sentence_chars: int = DEFAULT_MAX_SENTENCE_CHARS,
        merge_runs: bool | None = None,
    ) -> CompiledGrammar:
        """The compiled grammar for `fmt` and `labels` (from the cache when seen before)."""
        key = (
            fmt,
            tuple(labels),
            None if sentences is None else tuple(sentences),
            max_sentence_chars,
            merge_runs,
        )
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        tag_tokens = {
            t: i for t in (fmt.open_tag, fmt.close_tag) if (i := _single_token(self.tokenizer, t)) is not None
        }
        lark = descriptor_lark(
            fmt,
            labels,
            sentences=sentences,
            max_sentence_chars=max_sentence_chars,
            merge_runs=merge_runs,
            tag_tokens=tag_tokens,
        )
        llguidance = require_engine()
        started = time.perf_counter()
        template = llguidance.LLMatcher(
            self.ll_tokenizer, llguidance.LLMatcher.grammar_from_lark(lark), log_level=0
        )
        compile_s = time.perf_counter() - started
        if template.is_error():
            raise ConstraintError(
                f"descriptor grammar for labels {list(labels)} failed to compile: {template.get_error()}"
            )
        compiled = CompiledGrammar(
            key, lark, template, compile_s, tuple(labels), fmt, self.vocab_size, tuple(self.eos_ids)
        )
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled

    def __len__(self) -> int:
        return len(self._cache)


_COMPILERS: weakref.WeakKeyDictionary[Any, dict[tuple, GrammarCompiler]] = weakref.WeakKeyDictionary()
_COMPILERS_LOCK = threading.Lock()


def compiler_for(
    tokenizer: Any, vocab_size: int | None = None, eos_ids: Sequence[int] | None = None
) -> GrammarCompiler:
    """The shared `GrammarCompiler` of a tokenizer (one per tokenizer object, vocab size and eos ids)."""
    eos = tuple(eos_ids) if eos_ids else tuple(eos_token_ids(tokenizer))
    key = (int(vocab_size or 0), eos)
    with _COMPILERS_LOCK:
        per_tok = _COMPILERS.setdefault(tokenizer, {})
        if key not in per_tok:
            per_tok[key] = GrammarCompiler(tokenizer, vocab_size, eos)
        return per_tok[key]


# --------------------------------------------------------------------------------------------------
# Masking
# --------------------------------------------------------------------------------------------------

_BIT_SHIFTS = torch.arange(32, dtype=torch.int32)


def bitmask_to_bool(bitmask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, ceil(V/32)) int32 bitmask -> (B, vocab_size) bool allowed-token mask."""
    bits = ((bitmask.unsqueeze(-1) >> _BIT_SHIFTS) & 1).bool().reshape(bitmask.shape[0], -1)
    if bits.shape[1] >= vocab_size:
        return bits[:, :vocab_size]
    pad = torch.zeros(bitmask.shape[0], vocab_size - bits.shape[1], dtype=torch.bool)
    return torch.cat([bits, pad], dim=1)


@dataclass
class ConstraintStats:
    """What constrained decoding did: masks computed, time in the engine, tokens it forced."""

    masks: int = 0
    mask_s: float = 0.0
    forced_tokens: int = 0
    per_row_forced: list[int] = field(default_factory=list)

    @property
    def mask_ms(self) -> float:
        """Mean engine time per mask, in milliseconds."""
        return 1000.0 * self.mask_s / self.masks if self.masks else 0.0


class DescriptorLogitsProcessor(LogitsProcessor):
    """Keeps each row of a batch inside its own descriptor grammar (a `transformers` logits processor).

    `grammars[i]` constrains row i (rows may ask for different labels). The processor follows the
    sequences it is shown: it consumes whatever tokens were appended since its last call (one per step
    in `generate`, several after a jump-forward) and rolls back if the sequence was rewound. With
    `force_tokens`, a step where the grammar forces the next bytes allows only the canonical forced
    token. Rows that ended (end-of-sequence consumed) are left unmasked; `generate` pads them.
    """

    def __init__(
        self,
        grammars: Sequence[CompiledGrammar],
        *,
        force_tokens: bool = True,
        prompt_length: int | None = None,
    ):
        if not grammars:
            raise ValueError("DescriptorLogitsProcessor needs one grammar per batch row")
        self.matchers = [g.matcher() for g in grammars]
        self.grammars = list(grammars)
        self.force_tokens = force_tokens
        self.prompt_length = prompt_length
        self.tokens: list[list[int]] = [[] for _ in grammars]
        self.done = [False] * len(grammars)
        self.ahead = [0] * len(grammars)  # tokens consumed by `advance` that input_ids does not hold yet
        self.only_rows: set[int] | None = None  # when set, rows outside it are left unmasked (jump-forward)
        self.stats = ConstraintStats(per_row_forced=[0] * len(grammars))

    # -- following the sequences
    def _consume(self, row: int, tokens: Sequence[int]) -> None:
        matcher = self.matchers[row]
        eos = self.grammars[row].eos_ids
        for tok in tokens:
            if self.done[row]:
                return
            if not matcher.consume_token(int(tok)):
                raise ConstraintError(
                    f"row {row}: token {tok} left the descriptor grammar: {matcher.get_error()}"
                )
            self.tokens[row].append(int(tok))
            self.done[row] = int(tok) in eos

    def sync(self, input_ids: torch.Tensor) -> None:
        """Bring every matcher up to date with `input_ids` (prompt + generated tokens)."""
        if self.prompt_length is None:
            self.prompt_length = int(input_ids.shape[1])
        if input_ids.shape[0] != len(self.matchers):
            raise ValueError(
                f"batch has {input_ids.shape[0]} rows but the processor {len(self.matchers)} grammars"
            )
        generated = input_ids[:, self.prompt_length :].tolist()
        for row, gen in enumerate(generated):
            have = self.tokens[row]
            if len(gen) >= len(have) and gen[: len(have)] == have:
                self.ahead[row] = 0
                self._consume(row, gen[len(have) :])
                continue
            common = 0
            while common < min(len(gen), len(have)) and gen[common] == have[common]:
                common += 1
            if common == len(gen) and len(have) - common <= self.ahead[row]:
                self.ahead[row] = len(have) - common  # tokens the caller holds (jump-forward), not a rewind
                continue
            self.matchers[row].rollback(len(have) - common)
            del have[common:]
            self.done[row] = False
            self.ahead[row] = 0
            self._consume(row, gen[common:])

    def advance(self, row: int, token: int) -> list[int]:
        """Consume a token chosen for `row` and the tokens the grammar then forces; return the forced ones."""
        self._consume(row, [token])
        matcher = self.matchers[row]
        if self.done[row]:
            self.ahead[row] += 1
            return []
        forced = list(matcher.compute_ff_tokens())
        self._consume(row, forced)
        self.ahead[row] += 1 + len(forced)
        self.stats.forced_tokens += len(forced)
        self.stats.per_row_forced[row] += len(forced)
        return forced

    def finished(self, row: int) -> bool:
        """Whether the row has consumed its end-of-sequence token."""
        return self.done[row]

    # -- masking
    def allowed(self, rows: Sequence[int] | None = None, vocab_size: int | None = None) -> torch.Tensor:
        """(len(rows), V) bool mask of the tokens each row may take next (all True for ended rows)."""
        rows = list(range(len(self.matchers))) if rows is None else list(rows)
        vocab = int(vocab_size or self.grammars[0].vocab_size)
        bitmask = np.full((len(rows), (vocab + 31) // 32), -1, dtype=np.int32)
        started = time.perf_counter()
        ended = []
        forced: dict[int, int] = {}
        for j, row in enumerate(rows):
            matcher = self.matchers[row]
            if self.done[row]:
                ended.append(j)
                continue
            if matcher.is_error():
                raise ConstraintError(f"row {row}: {matcher.get_error()}")
            if self.force_tokens:
                ff = matcher.compute_ff_tokens()
                if ff:
                    forced[j] = ff[0]
                    continue
            view = bitmask[j]
            matcher.unsafe_compute_mask_ptr(view.ctypes.data, view.nbytes)
        self.stats.masks += len(rows) - len(ended)
        self.stats.mask_s += time.perf_counter() - started
        allowed = bitmask_to_bool(torch.from_numpy(bitmask), vocab)
        for j in ended:
            allowed[j] = True
        for j, tok in forced.items():
            allowed[j] = False
            allowed[j, tok] = True
        return allowed

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.sync(input_ids)
        if self.only_rows is None:
            allowed = self.allowed(vocab_size=scores.shape[-1]).to(scores.device)
            return scores.masked_fill(~allowed, float("-inf"))
        rows = sorted(self.only_rows)
        out = scores.clone()
        if rows:
            allowed = self.allowed(rows, vocab_size=scores.shape[-1]).to(scores.device)
            out[rows] = scores[rows].masked_fill(~allowed, float("-inf"))
        return out


# --------------------------------------------------------------------------------------------------
# Jump-forward decoding loop (a `custom_generate` for `model.generate`)
# --------------------------------------------------------------------------------------------------


def find_descriptor_processor(processors: Sequence[Any]) -> DescriptorLogitsProcessor | None:
    for proc in processors:
        if isinstance(proc, DescriptorLogitsProcessor):
            return proc
    return None


def jump_forward_generate(
    model: Any,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: Any,
    generation_config: Any,
    synced_gpus: bool = False,
    streamer: Any = None,
    **model_kwargs: Any,
) -> torch.LongTensor:
    """Greedy or sampled decoding that appends grammar-forced tokens without a forward pass.

    Pass as `model.generate(..., logits_processor=[DescriptorLogitsProcessor(...)],
    custom_generate=jump_forward_generate)`: `generate` prepares the inputs and cache as usual and this
    loop replaces its token-by-token loop. Each row keeps a queue of tokens already known (the token it
    chose and the ones the grammar forces after it); every forward pass feeds the same number of
    queued tokens to all rows (the shortest queue), so one pass covers a whole forced stretch when
    every row has one. Returns the sequences, like `generate`.
    """
    if streamer is not None:
        raise ValueError("jump_forward_generate does not support streamers")
    if synced_gpus:
        raise ValueError("jump_forward_generate does not support synced_gpus")
    grammar = find_descriptor_processor(logits_processor)
    if grammar is None:
        raise ValueError("jump_forward_generate needs a DescriptorLogitsProcessor in logits_processor")
    pad_token_id = generation_config._pad_token_tensor
    max_length = int(generation_config.max_length)
    do_sample = bool(generation_config.do_sample)
    batch = input_ids.shape[0]
    unfinished = torch.ones(batch, dtype=torch.bool, device=input_ids.device)
    pending: list[list[int]] = [[] for _ in range(batch)]
    pad = int(pad_token_id) if pad_token_id is not None else 0
    eos = {t for g in grammar.grammars for t in g.eos_ids}

    outputs = model._prefill(input_ids, generation_config, model_kwargs)
    while True:
        need = [i for i in range(batch) if unfinished[i] and not pending[i]]
        if need:
            logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32, device=input_ids.device)
            grammar.only_rows = set(need)  # rows still holding known tokens need no mask this step
            try:
                scores = logits_processor(input_ids, logits)
            finally:
                grammar.only_rows = None
            if do_sample:
                chosen = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
            else:
                chosen = torch.argmax(scores, dim=-1)
            for i in need:
                tok = int(chosen[i])
                pending[i] = [tok, *grammar.advance(i, tok)]
        active = [i for i in range(batch) if unfinished[i]]
        n = min(len(pending[i]) for i in active)
        n = max(1, min(n, max_length - input_ids.shape[1]))
        feed = torch.full((batch, n), pad, dtype=input_ids.dtype, device=input_ids.device)
        for i in active:
            feed[i] = torch.tensor(pending[i][:n], dtype=input_ids.dtype)
            del pending[i][:n]
        input_ids = torch.cat([input_ids, feed], dim=-1)
        for i in active:
            if int(feed[i, -1]) in eos:
                unfinished[i] = False
        if input_ids.shape[1] >= max_length:
            unfinished[:] = False
        model_kwargs = model._update_model_kwargs_for_generation(
            outputs, model_kwargs, is_encoder_decoder=model.config.is_encoder_decoder, num_new_tokens=n
        )
        if not bool(unfinished.any()):
            break
        model_inputs = model.prepare_inputs_for_generation(input_ids, next_sequence_length=n, **model_kwargs)
        outputs = model(**model_inputs, return_dict=True)
    return input_ids
