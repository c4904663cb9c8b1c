"""`Segmenter`: a fine-tuned image-text-to-text model -> descriptor text -> masks at image size.

    seg = Segmenter.from_pretrained("runs/tiny/final")            # or Segmenter(model, processor)
    result = seg.segment("photo.jpg", "the red circle")           # a referring expression
    result.mask, result.box, result.text, result.repairs
    results = seg.segment_batch([(img1, "cat"), (img2, ["cat", "dog"])], batch_size=8)

Prompts are rendered exactly as in training (the data templates' wording, the model's chat template
through `text4seg.models.registry`). Generation is greedy and, by default, grammar-constrained for the
requested grid and labels with jump-forward over forced tokens (`text4seg.infer.constrain`), so every
answer decodes strictly; with `constrained=False` the codec's lenient decoder repairs what it must and
says so in `result.repairs`. An optional refiner (`text4seg.infer.refine.SamRefiner`) turns the coarse
grid into a sharper mask; both masks are kept.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from text4seg.codec import TEXT4SEG, Descriptor, DescriptorFormat, Repair, check_label, decode, mask_to_box
from text4seg.infer.bias import BackgroundBias, background_token_ids
from text4seg.infer.constrain import (
    DescriptorLogitsProcessor,
    compiler_for,
    jump_forward_generate,
    require_engine,
)
from text4seg.infer.prompts import Query, make_query
from text4seg.infer.sources import check_sources, hub_options, saved_settings
from text4seg.models import registry
from text4seg.models.unwrap import unwrap_model
from text4seg.protocol import templates
from text4seg.protocol.asking import ANSWER_FORMS, UPSAMPLE_METHODS, write_settings
from text4seg.protocol.images import ImageInput, load_image

Target = str | Sequence[str]

SANE_MODEL_MAX_LENGTH = 10**7
"""A tokenizer's `model_max_length` above this is transformers' "unknown" placeholder, not a context."""


@dataclass
class SegmentationResult:
    """One prediction.

    `mask` is the final mask at image size (refined when a refiner ran, else coarse): bool for a
    referring expression; for a class list, `mask` is the union of all classes and `label_map` the
    int32 map whose values index `labels`. `grid` is the decoded label grid, `text` the raw answer,
    `repairs` what lenient decoding had to fix (always empty under constrained decoding). `timings`
    are seconds for the batch this sample ran in (`batch_size` samples); `forward_passes` counts the
    model forward calls of that batch and `new_tokens` this sample's generated tokens. The coarse
    (grid) prediction is always kept in `coarse_mask` / `coarse_label_map`; with a refiner, `mask` and
    `label_map` hold the refined result, `refined_mask` the refined foreground and `refinement` the
    refiner's report. `upsample` names how the grid was brought to image size (`Segmenter.upsample`).
    """

    mask: np.ndarray
    label_map: np.ndarray
    grid: np.ndarray
    labels: list[str]
    text: str
    descriptor: Descriptor
    box: tuple[int, int, int, int] | None
    repairs: list[Repair]
    question: str
    timings: dict[str, float] = field(default_factory=dict)
    forward_passes: int = 0
    new_tokens: int = 0
    batch_size: int = 1
    constrained: bool = True
    coarse_mask: np.ndarray | None = None
    coarse_label_map: np.ndarray | None = None
    refined_mask: np.ndarray | None = None
    refinement: Any = None
    upsample: str = "bilinear"

    @property
    def ok(self) -> bool:
        """True when the answer was a well-formed descriptor (nothing repaired)."""
        return not self.repairs

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image the mask belongs to."""
        return int(self.mask.shape[0]), int(self.mask.shape[1])

    def summary(self) -> dict[str, Any]:
        """JSON-friendly facts about the prediction (no arrays)."""
        return {
            "labels": self.labels,
            "question": self.question,
            "text": self.text,
            "box": list(self.box) if self.box else None,
            "foreground_cells": int((self.grid != 0).sum()),
            "repairs": [str(r) for r in self.repairs],
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
            "forward_passes": self.forward_passes,
            "new_tokens": self.new_tokens,
            "batch_size": self.batch_size,
            "constrained": self.constrained,
            "upsample": self.upsample,
            "refined": self.refined_mask is not None,
            "refinement": self.refinement.as_dict() if hasattr(self.refinement, "as_dict") else None,
        }


class _ForwardCounter:
    """Counts forward calls of a module while active (a forward pre-hook)."""

    def __init__(self, module: torch.nn.Module):
        self.module, self.count, self._handle = module, 0, None

    def __enter__(self) -> _ForwardCounter:
        self.count = 0
        self._handle = self.module.register_forward_pre_hook(self._hook)
        return self

    def _hook(self, *_: Any) -> None:
        self.count += 1

    def __exit__(self, *_: Any) -> None:
        if self._handle is not None:
            self._handle.remove()


def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def context_length(model: Any, tokenizer: Any = None) -> int | None:
    """The most tokens `model` takes (prompt and answer together): its text config's (or config's)
    `max_position_embeddings`, else the tokenizer's `model_max_length` when that is a real figure; None
    when neither says."""
    config = getattr(unwrap_model(model), "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else None
    for cfg in (text_config, config):
        value = getattr(cfg, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value <= SANE_MODEL_MAX_LENGTH else None


def _logits_width(model: Any) -> int:
    emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is not None and hasattr(emb, "weight"):
        return int(emb.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


class Segmenter:
    """Segments images with a text4seg model (see the module docstring).

    `fmt` (or `grid`, which overrides its grid size) must match what the model was trained on.
    `constrained` keeps generation inside the descriptor grammar; `jump_forward` appends the tokens
    the grammar forces without a forward pass (same text, fewer passes). `answer_sentences`:
    "templates" allows only the training templates' sentences before `<seg>` (for referring
    expressions; class lists always allow a free sentence), "free" any one-line sentence, "none" no
    sentence. `max_new_tokens` defaults to a bound on a well-formed answer (counted in the tokenizer's
    tokens of the grid's runs, see `token_budget`); it is always capped by the room the model's context
    (`context_length`) leaves after the prompt. A label (expression or class name) is refused
    (ValueError) when its question and an answer naming it once per row do not fit that context.
    `target_label`:
    the fixed word a model trained with `BuildConfig(target_label=...)` writes for referred cells
    (None: the expression itself). `upsample` brings the grid to image size: "guided" (the default:
    bilinear indicators filtered with the image as guide, so outlines follow its edges; +11 to +23 cIoU
    points over "bilinear" on bench/results/upsample.md's held-out sets), "bilinear" or "nearest".
    `background_bias` lowers the logits of the tokens that write background (`text4seg.infer.bias`;
    0 = plain decoding), a recall knob to calibrate on validation data. `question_style` words the
    question when `question` is None (`protocol.templates.QUESTION_STYLES`: "ours", or "text4seg" as
    Text4Seg's checkpoints were trained).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        *,
        fmt: DescriptorFormat = TEXT4SEG,
        grid: int | tuple[int, int] | None = None,
        constrained: bool = True,
        jump_forward: bool = True,
        refiner: Any = None,
        answer_sentences: str = "templates",
        question: str | None = None,
        max_new_tokens: int | None = None,
        upsample: str = "guided",
        generate_kwargs: dict[str, Any] | None = None,
        target_label: str | None = None,
        background_bias: float = 0.0,
        question_style: str = "ours",
    ):
        if answer_sentences not in ANSWER_FORMS:
            raise ValueError(
                f"answer_sentences must be one of {list(ANSWER_FORMS)}, got {answer_sentences!r}"
            )
        if upsample not in UPSAMPLE_METHODS:
            raise ValueError(f"upsample must be one of {list(UPSAMPLE_METHODS)}, got {upsample!r}")
        if constrained:
            require_engine()
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = registry.tokenizer_of(processor)
        self.tokenizer.padding_side = "left"
        self.fmt = fmt.with_grid(grid) if grid is not None else fmt
        self.constrained = constrained
        self.jump_forward = jump_forward
        self.refiner = refiner
        self.answer_sentences = answer_sentences
        self.question = question
        templates.style_question(question_style)  # refuses an unknown style here, not at the first query
        self.question_style = question_style
        self.target_label = target_label
        self.background_bias = float(background_bias)
        if target_label is not None:
            check_label(target_label, self.fmt)
        self.max_new_tokens = max_new_tokens
        self.upsample = upsample
        self.generate_kwargs = dict(generate_kwargs or {})
        self.eos_ids = registry.stop_token_ids(processor, model)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_ids[0]
        inner = unwrap_model(model)
        self._counted = inner
        self.device = _model_device(inner)
        self.context_length = context_length(inner, self.tokenizer)
        self._compiler = None
        self._token_counts: dict[str, int] = {}

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | Path,
        adapter: str | Path | None = None,
        refiner: Any = None,
        *,
        dtype: Any = "auto",
        device: str | torch.device | None = None,
        constrained: bool = True,
        trust_remote_code: bool = False,
        visible: str | None = None,
        local_files_only: bool | None = None,
        **kwargs: Any,
    ) -> Segmenter:
        """Load a model (hub id or folder, optionally a PEFT adapter) and wrap it; see `Segmenter`.

        A model or adapter that is neither a folder, nor in the local Hugging Face cache, nor reachable
        on the Hub raises `text4seg.infer.sources.ModelSourceError` (an OSError) at once. Settings saved
        as text4seg.json (`save_settings`: grid, target label, answer sentences, question, upsampling,
        background bias) beside the base model (folder or Hub repository) and beside the adapter (whose
        values win) are the defaults; keywords given here (and not None) win over both; a `question_style`
        given here (and no `question`) also replaces a saved question. An invalid text4seg.json raises
        ValueError naming the file, before the model loads. `visible` ("squash", "pad", "crop"; None: as
        saved with the processor) says how the whole image reaches the model (`models.loading.load_processor`).
        `local_files_only` reads Hub ids (model, adapter) from the local cache only; None: when
        `HF_HUB_OFFLINE` is set or the Hub cannot be reached (`text4seg.infer.sources.hub_options`). A Hub
        adapter is read from its cached snapshot folder, so old PEFT layouts are remapped as for a folder.
        """
        from text4seg.models.loading import load_model_and_processor

        check_sources(path_or_id, adapter)
        given = {k: v for k, v in kwargs.items() if v is not None}
        settings = saved_settings(path_or_id, adapter)
        if "question_style" in given and "question" not in given:
            settings.pop("question", None)
        model, processor = load_model_and_processor(
            path_or_id,
            dtype=dtype,
            adapter=adapter,
            trust_remote_code=trust_remote_code,
            visible=visible,
            **hub_options(path_or_id, adapter, local_files_only),
        )
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        return cls(model, processor, refiner=refiner, constrained=constrained, **{**settings, **given})

    # -- helpers --------------------------------------------------------------------------------
    @property
    def compiler(self):
        """The grammar compiler (and cache) for this model's tokenizer."""
        if self._compiler is None:
            self._compiler = compiler_for(self.tokenizer, _logits_width(self._counted), self.eos_ids)
        return self._compiler

    def query(self, target: Target) -> Query:
        """The question and label set for a referring expression or a class list.

        Raises ValueError for a target `make_query` refuses, or one the model's context cannot hold."""
        try:
            query = make_query(target, self.fmt, self._question(target))
        except (KeyError, IndexError) as err:  # the template names a field this kind of target leaves empty
            kind = "referring expression" if isinstance(target, str) else "class list"
            raise ValueError(
                f"the question template {self.question!r} names a field a {kind} does not fill ({err}); "
                "a model trained on one kind of question is asked another"
            ) from err
        if self.target_label is not None and query.task == "refer":
            query = replace(query, labels=(self.fmt.background, self.target_label))
        self._check_context(query)
        return query

    def _question(self, target: Target) -> str | None:
        """The question template: the one given, else the one of the question style."""
        if self.question is not None:
            return self.question
        return templates.style_question(self.question_style, None if isinstance(target, str) else target)

    def _tokens(self, text: str) -> int:
        """How many tokens the tokenizer writes `text` in (cached)."""
        if text not in self._token_counts:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self._token_counts[text] = len(ids)
        return self._token_counts[text]

    def _run_tokens(self, labels: Sequence[str]) -> int:
        """Tokens of the longest run `{label} *{cols}| ` (one more for a token across run boundaries)."""
        cols = self.fmt.grid[1]
        fmt = self.fmt
        return max(self._tokens(f"{label}{fmt.count_sep}{cols}{fmt.run_sep}") for label in labels) + 1

    def _check_context(self, query: Query) -> None:
        if self.context_length is None:
            return
        question = self._tokens(query.question)
        answer = self.fmt.grid[0] * self._run_tokens(query.labels)
        if question + answer > self.context_length:
            raise ValueError(
                f"the {'expression' if query.task == 'refer' else 'class list'} is too long for this model: "
                f"the question ({question} tokens) and an answer naming the label once per row "
                f"({answer} tokens) exceed its context of {self.context_length} tokens"
            )

    def settings(self) -> dict[str, Any]:
        """The settings a model's answers depend on (what `save_settings` writes)."""
        return {
            "grid": list(self.fmt.grid),
            "target_label": self.target_label,
            "answer_sentences": self.answer_sentences,
            "question": self.question,
            "upsample": self.upsample,
            "background_bias": self.background_bias,
            "question_style": self.question_style,
        }

    def save_settings(self, folder: str | Path) -> Path:
        """Write `settings()` to FOLDER/text4seg.json, so `from_pretrained(FOLDER)` restores them."""
        return write_settings(folder, self.settings())

    def _sentences(self, query: Query) -> Sequence[str] | None:
        if self.answer_sentences == "none":
            return ()
        if self.answer_sentences == "templates" and query.answer_sentences is not None:
            return query.answer_sentences
        return None

    def grammar(self, query: Query):
        """The compiled (cached) grammar for a query."""
        return self.compiler.compile(self.fmt, query.labels, sentences=self._sentences(query))

    def token_budget(self, query: Query, prompt_length: int | None = None) -> int:
        """`max_new_tokens` for a query: the given one, else a bound on a well-formed answer computed from
        the grid and the tokenized labels (every cell its own run of the longest label, one token of slack
        per run and row, the longest allowed sentence and the tags); capped by the room the model's
        context leaves after a prompt of `prompt_length` tokens. ValueError when no room is left."""
        if self.max_new_tokens is not None:
            budget = int(self.max_new_tokens)
        else:
            rows, cols = self.fmt.grid
            fmt = self.fmt
            body = rows * cols * self._run_tokens(query.labels) + rows * (self._tokens(fmt.row_sep) + 1)
            tags = self._tokens(fmt.open_tag) + self._tokens(fmt.close_tag) + self._tokens(fmt.end) + 2
            budget = body + self._sentence_tokens(query) + tags
        if self.context_length is None or prompt_length is None:
            return budget
        room = self.context_length - int(prompt_length)
        if room < 1:
            raise ValueError(
                f"the prompt takes {prompt_length} tokens, the model's whole context of {self.context_length}: "
                "no room is left for an answer (use a smaller image or a shorter question)"
            )
        return min(budget, room)

    def _sentence_tokens(self, query: Query) -> int:
        sentences = self._sentences(query)
        if sentences is None:  # a free sentence: bounded in characters, and a token holds at least one byte
            from text4seg.infer.constrain import DEFAULT_MAX_SENTENCE_CHARS

            return 4 * DEFAULT_MAX_SENTENCE_CHARS + 1
        return max((self._tokens(s) for s in sentences), default=0) + 2

    def _encode(self, images: list[Image.Image], queries: list[Query]) -> Any:
        prompts = [registry.render_prompt(self.processor, q.question) for q in queries]
        add_special = registry.add_special_tokens_for(self.processor, prompts[0])
        enc = self.processor(
            text=prompts,
            images=[[img] for img in images],
            padding=True,
            return_tensors="pt",
            add_special_tokens=add_special,
        )
        return enc.to(self.device)

    def _answer_text(self, ids: list[int]) -> tuple[str, int]:
        """Decode generated ids up to (not including) the first end-of-turn/eos; also return the token count."""
        eos = set(self.eos_ids)
        cut = next((i for i, t in enumerate(ids) if t in eos), None)
        n_tokens = len(ids) if cut is None else cut + 1
        body = ids if cut is None else ids[:cut]
        body = [t for t in body if t != self.pad_id or t in eos]
        return self.tokenizer.decode(body, skip_special_tokens=False), n_tokens

    # -- prediction -----------------------------------------------------------------------------
    def segment(
        self, image: ImageInput, expression_or_classes: Target, **overrides: Any
    ) -> SegmentationResult:
        """Segment one image for a referring expression (str) or a list of class names."""
        return self.segment_batch([(image, expression_or_classes)], batch_size=1, **overrides)[0]

    def segment_batch(
        self,
        pairs: Iterable[tuple[ImageInput, Target]],
        batch_size: int = 8,
        *,
        progress: bool = False,
        constrained: bool | None = None,
        jump_forward: bool | None = None,
    ) -> list[SegmentationResult]:
        """Segment many `(image, expression or class list)` pairs, `batch_size` at a time (left padding).

        Inputs are checked before any model work: an unreadable image raises `ImageReadError` and an
        empty expression ValueError, naming the pair's index.
        """
        constrained = self.constrained if constrained is None else constrained
        jump_forward = self.jump_forward if jump_forward is None else jump_forward
        pairs = list(pairs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        prepared = []
        for index, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"pair {index} must be (image, expression or class list), got {pair!r:.80}")
            image, target = pair
            started = time.perf_counter()
            try:
                rgb = load_image(image)
                query = self.query(target)
            except (ValueError, TypeError) as err:
                raise type(err)(f"pair {index}: {err}") from err
            prepared.append((rgb, query, time.perf_counter() - started))
        results: list[SegmentationResult] = []
        bar = tqdm(total=len(prepared), desc="segment", unit="mask", disable=not progress)
        for start in range(0, len(prepared), batch_size):
            chunk = prepared[start : start + batch_size]
            results += self._run_batch(chunk, constrained, jump_forward)
            bar.update(len(chunk))
        bar.close()
        return results

    @torch.inference_mode()
    def _run_batch(
        self, chunk: list[tuple[Image.Image, Query, float]], constrained: bool, jump_forward: bool
    ) -> list[SegmentationResult]:
        images = [c[0] for c in chunk]
        queries = [c[1] for c in chunk]
        t0 = time.perf_counter()
        enc = self._encode(images, queries)
        prompt_len = int(enc["input_ids"].shape[1])
        kwargs: dict[str, Any] = {
            "do_sample": False,
            "max_new_tokens": max(self.token_budget(q, prompt_len) for q in queries),
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.pad_id,
        }
        kwargs.update(self.generate_kwargs)
        processors: list[Any] = []
        if self.background_bias:
            width = _logits_width(self._counted)
            rows = [background_token_ids(self.tokenizer, q.labels, width) for q in queries]
            processors.append(BackgroundBias(rows, self.background_bias))
        processor = None
        if constrained:
            processor = DescriptorLogitsProcessor(
                [self.grammar(q) for q in queries], prompt_length=prompt_len
            )
            processors.append(processor)
        if processors:
            kwargs["logits_processor"] = processors
        if constrained and jump_forward:
            kwargs["custom_generate"] = jump_forward_generate
        t1 = time.perf_counter()
        with _ForwardCounter(self._counted) as counter:
            out = self.model.generate(**enc, **kwargs)
        t2 = time.perf_counter()
        sequences = out.sequences if hasattr(out, "sequences") else out
        generated = sequences[:, prompt_len:].tolist()
        results = []
        for (rgb, query, load_s), ids in zip(chunk, generated, strict=True):
            started = time.perf_counter()
            text, n_tokens = self._answer_text(ids)
            result = self._finish(rgb, query, text, n_tokens, constrained)
            refine_s = result.timings.get("refine", 0.0)
            result.timings.update(
                load=load_s,
                encode=t1 - t0,
                generate=t2 - t1,
                decode=time.perf_counter() - started - refine_s,
            )
            result.forward_passes = counter.count
            result.batch_size = len(chunk)
            if processor is not None:
                result.timings["mask_engine"] = processor.stats.mask_s
            results.append(result)
        done = time.perf_counter()
        for result in results:
            result.timings["total"] = result.timings["load"] + (done - t0)
        return results

    def _finish(
        self, rgb: Image.Image, query: Query, text: str, n_tokens: int, constrained: bool
    ) -> SegmentationResult:
        descriptor = decode(text, self.fmt, strict=False, labels=list(query.labels))
        size = (rgb.height, rgb.width)
        coarse_map = descriptor.to_mask(size, method=self.upsample, image=rgb)
        if coarse_map.dtype == bool:
            coarse_map = coarse_map.astype(np.int32)
        coarse = coarse_map != 0
        result = SegmentationResult(
            mask=coarse,
            label_map=coarse_map,
            grid=descriptor.grid,
            labels=list(descriptor.labels),
            text=text,
            descriptor=descriptor,
            box=None,
            repairs=list(descriptor.report),
            question=query.question,
            new_tokens=n_tokens,
            constrained=constrained,
            coarse_mask=coarse,
            coarse_label_map=coarse_map,
            upsample=self.upsample,
        )
        if self.refiner is not None:
            started = time.perf_counter()
            binary = len(query.labels) <= 2
            refinement = self.refiner.refine(rgb, descriptor.grid, coarse=coarse if binary else coarse_map)
            result.timings["refine"] = time.perf_counter() - started
            refined = np.asarray(refinement.mask)
            result.refinement = refinement
            result.label_map = refined.astype(np.int32)
            result.refined_mask = refined != 0
            result.mask = result.refined_mask
        box = mask_to_box(result.mask)
        result.box = tuple(int(v) for v in box) if box is not None else None
        return result
