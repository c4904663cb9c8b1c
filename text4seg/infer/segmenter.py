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
from text4seg.models import registry
from text4seg.protocol.asking import load_settings, write_settings
from text4seg.protocol.images import ImageInput, load_image

Target = str | Sequence[str]


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
    refiner's report.
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
    sentence. `max_new_tokens` defaults to a bound no well-formed answer exceeds. `target_label`:
    the fixed word a model trained with `BuildConfig(target_label=...)` writes for referred cells
    (None: the expression itself). `background_bias` lowers the logits of the tokens that write
    background (`text4seg.infer.bias`; 0 = plain decoding), a recall knob to calibrate on validation data.
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
        upsample: str = "bilinear",
        generate_kwargs: dict[str, Any] | None = None,
        target_label: str | None = None,
        background_bias: float = 0.0,
    ):
        if answer_sentences not in ("templates", "free", "none"):
            raise ValueError(
                f"answer_sentences must be 'templates', 'free' or 'none', got {answer_sentences!r}"
            )
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
        self.target_label = target_label
        self.background_bias = float(background_bias)
        if target_label is not None:
            check_label(target_label, self.fmt)
        self.max_new_tokens = max_new_tokens
        self.upsample = upsample
        self.generate_kwargs = dict(generate_kwargs or {})
        self.eos_ids = registry.end_of_turn_ids(processor)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_ids[0]
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._counted = inner
        self.device = _model_device(inner)
        self._compiler = None

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
        **kwargs: Any,
    ) -> Segmenter:
        """Load a model (hub id or folder, optionally a PEFT adapter) and wrap it; see `Segmenter`.

        Settings saved with the model (`save_settings`: grid, target label, answer sentences, question,
        upsampling) are the defaults; keywords given here (and not None) win.
        """
        from text4seg.models.loading import load_model_and_processor

        kwargs = {**load_settings(path_or_id), **{k: v for k, v in kwargs.items() if v is not None}}
        model, processor = load_model_and_processor(
            path_or_id, dtype=dtype, adapter=adapter, trust_remote_code=trust_remote_code
        )
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
        return cls(model, processor, refiner=refiner, constrained=constrained, **kwargs)

    # -- helpers --------------------------------------------------------------------------------
    @property
    def compiler(self):
        """The grammar compiler (and cache) for this model's tokenizer."""
        if self._compiler is None:
            self._compiler = compiler_for(self.tokenizer, _logits_width(self._counted), self.eos_ids)
        return self._compiler

    def query(self, target: Target) -> Query:
        """The question and label set for a referring expression or a class list."""
        query = make_query(target, self.fmt, self.question)
        if self.target_label is not None and query.task == "refer":
            return replace(query, labels=(self.fmt.background, self.target_label))
        return query

    def settings(self) -> dict[str, Any]:
        """The settings a model's answers depend on (what `save_settings` writes)."""
        return {
            "grid": list(self.fmt.grid),
            "target_label": self.target_label,
            "answer_sentences": self.answer_sentences,
            "question": self.question,
            "upsample": self.upsample,
            "background_bias": self.background_bias,
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

    def token_budget(self, query: Query) -> int:
        """Most tokens a well-formed answer can take (a byte bound; one token holds at least one byte)."""
        if self.max_new_tokens is not None:
            return int(self.max_new_tokens)
        rows, cols = self.fmt.grid
        longest = max(len(label.encode()) for label in query.labels)
        run = longest + len(self.fmt.count_sep.encode()) + len(str(cols)) + len(self.fmt.run_sep.encode())
        body = rows * cols * run + rows * len(self.fmt.row_sep.encode()) + len(self.fmt.end.encode())
        sentences = self._sentences(query)
        if sentences is None:
            from text4seg.infer.constrain import DEFAULT_MAX_SENTENCE_CHARS

            sentence = 4 * DEFAULT_MAX_SENTENCE_CHARS + 1
        else:
            sentence = max((len(s.encode()) for s in sentences), default=0) + 1
        tags = len(self.fmt.open_tag.encode()) + len(self.fmt.close_tag.encode())
        return body + sentence + tags + 2

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
            "max_new_tokens": max(self.token_budget(q) for q in queries),
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
        coarse_map = descriptor.to_mask(size, method=self.upsample)
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
