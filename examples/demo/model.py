"""The demo's model surgery: a tiny random Qwen3-VL (recipe.yaml's `model.tiny`) with a tokenizer fitted
to the demo's text, a question-first chat template and a 2-D sin-cos start for the vision positions.

- The fitted tokenizer makes each whole descriptor row one token (``others *5| target *4| others *7\\n ``,
  ~120 distinct rows) and keeps every other word a token of its own, so the expression's colour and kind
  stay readable; with a fixed target label, answer row k then sits exactly k text positions after the
  start, at a constant rotary offset from the image token row that holds it (row k // 2 with the recipe's
  2×2 merged vision tokens).
- The question before the image keeps that offset the same for every record.
- The vision tower's position table starts as a 2-D sin-cos code at the scale of its patch features
  (`text4seg.models.positions`): a random table starts at a sixteenth of that scale and barely grows.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from text4seg.codec import TEXT4SEG, DescriptorFormat
from text4seg.train.config import TrainConfig

from .settings import DemoSettings

QUESTION_FIRST_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}{% else %}{{ '<|im_start|>user\\n' }}{% endif %}"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "{{ '<|vision_start|><|image_pad|><|vision_end|>' }}{% endif %}{% endfor %}"
    "{% endif %}{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""Qwen-style chat template that renders a user turn's text before its image(s)."""


def make_model(config: TrainConfig, demo: DemoSettings, train_records: Any) -> tuple[Any, Any]:
    """The tiny random-initialised model and its processor that the demo trains: `config.model.tiny`
    with the fitted tokenizer's vocabulary, the chat template and the vision positions of `demo`."""
    from text4seg.models.positions import init_vision_positions
    from text4seg.models.tiny import build_tiny

    arch = config.model.name_or_path.removeprefix("tiny:")
    tiny = dict(config.model.tiny)
    text_config = dict(tiny.pop("text_config", None) or {})
    _, processor = build_tiny(arch, **{**tiny, "text_config": text_config})
    if demo.fit_tokenizer:
        with tempfile.TemporaryDirectory() as workdir:
            processor = fit_tokenizer(
                processor, answer_corpus(train_records), demo.vocab_size, Path(workdir), demo.whole_rows
            )
        text_config["vocab_size"] = len(processor.tokenizer)
    model, _ = build_tiny(arch, **{**tiny, "text_config": text_config})
    if demo.vision_positions == "sincos":
        init_vision_positions(model, demo.vision_position_scale)
    merge = (tiny.get("vision_config") or {}).get("spatial_merge_size")
    for part in ("image_processor", "video_processor"):
        sub = getattr(processor, part, None)
        if merge is not None and sub is not None and hasattr(sub, "merge_size"):
            sub.merge_size = merge  # the processor must cut the image as the vision tower merges it
    if demo.question_first:
        processor.chat_template = QUESTION_FIRST_TEMPLATE
        processor.tokenizer.chat_template = QUESTION_FIRST_TEMPLATE
    return model, processor


def answer_corpus(records: Any, limit: int = 3000) -> list[str]:
    """The texts (questions and answers) of the first `limit` records, for fitting the tokenizer."""
    texts = []
    # only the messages column: iterating the whole records would decode every image
    for record in records.select(range(min(limit, len(records)))).select_columns(["messages"]):
        for message in record["messages"]:
            for part in message["content"]:
                if part.get("text"):
                    texts.append(part["text"])
    return texts


def fit_tokenizer(
    processor: Any, texts: list[str], vocab_size: int, workdir: Path, whole_rows: bool = False
) -> Any:
    """`processor` with a byte-level BPE refitted on `texts`, keeping every special token and its id.

    The pre-tokenizer keeps descriptor pieces whole, so the BPE can learn them as single tokens: a
    run (``others *16\\n ``), or a whole row with `whole_rows`; everything else is cut into words, so
    that the expression's words stay tokens of their own. Returns a processor reloaded from `workdir`.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoProcessor

    tok = processor.tokenizer
    specials = [token.content for _, token in sorted(tok.added_tokens_decoder.items())]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(piece_pattern(TEXT4SEG, whole_rows)), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    for index, content in enumerate(specials):
        if backend.token_to_id(content) != index:
            raise RuntimeError(f"special token {content!r} moved from id {index}")
    workdir.mkdir(parents=True, exist_ok=True)
    processor.save_pretrained(workdir)
    (workdir / "tokenizer.json").write_text(backend.to_str(), encoding="utf-8")
    return AutoProcessor.from_pretrained(workdir)


def piece_pattern(fmt: DescriptorFormat, whole_rows: bool) -> str:
    """Regex of the pre-tokenizer's pieces: a tag, a descriptor row or run, else a word, punctuation
    or space."""
    count, run_sep, row_sep = (re.escape(x) for x in (fmt.count_sep, fmt.run_sep, fmt.row_sep))
    end = re.escape(fmt.end)
    label = rf"(?:(?!{count}|{run_sep}|{row_sep}|{end}).)+"
    run = rf"{label}{count}[0-9]+"
    if whole_rows:
        piece = rf"(?:{run}{run_sep})*{run}(?:{row_sep}|{end})"
    else:
        piece = rf"{run}(?:{run_sep}|{row_sep}|{end})?"
    tags = f"{re.escape(fmt.open_tag)}|{re.escape(fmt.close_tag)}"
    return rf"{tags}|{piece}| ?\w+| ?[^\s\w]+|\s+"
