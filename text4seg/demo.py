"""The embedded demo: a tiny model learns referring segmentation of synthetic shapes on the CPU.

`run_demo(out_dir, DemoConfig(...))` chains the real modules, each doing its one job:

1. `text4seg.data`: draw a synthetic shapes dataset in the RefCOCO file layout and build its records
   (1-3 shapes of several colours, kinds and sizes per image; every other image holds a distractor that
   shares a colour or a kind with the target; expressions name colour and kind);
2. `text4seg.models.tiny.build_tiny`: a random-initialised Qwen3-VL of 0.52M parameters, with the demo's
   choices below;
3. `text4seg.train.train`: full fine-tuning for at most `minutes` of wall-clock time;
4. `text4seg.infer.Segmenter` (grammar-constrained decoding) and `text4seg.eval.evaluate`: gIoU/cIoU on
   held-out expressions drawn across the test split, beside the all-background baseline and the
   ceiling of the descriptor grid itself (the ground truth passed through the codec and back);
5. `text4seg.viz`: a sheet of predictions and the loss curve.

The demo's levers (each measured in bench/results/demo.md, with what it did). The aim is that a
random model can find image row k when it writes descriptor row k:

- Qwen3-VL with `merge=1`: one vision token per descriptor cell, each carrying its row and column in
  the 2-D rotary positions (and the vision tower's learned position embeddings);
- a tokenizer fitted to the demo's text that makes each whole descriptor row one token
  (``others *5| target *4| others *7\\n ``, ~120 distinct rows) and keeps every other word a token of
  its own, so the expression's colour and kind stay readable; with a fixed label (``target``) for the
  referred cells, answer row k then sits exactly k text positions after the start, at a constant
  rotary offset from image row k;
- the question before the image, and the answer opening with the expression's colour and kind
  (``red circle\n<seg>…``, always four tokens): the offset stays the same for every record, and the
  model first reads the expression back, so the descriptor rows attend to the words that name the target
  (the question swapped for another shape's then changes the answer: bench/probe_grounding.py);
- a small rotary base (`rope_theta=100`), for sharper position-selective attention over 16 rows;
- the vision tower's position table started as a 2-D sin-cos code at the scale of its patch features
  (`text4seg.models.positions`): a random table starts at a sixteenth of that scale and barely grows;
- a narrow language MLP (256 = 2 × hidden): a step 1.2× faster, and better at equal time;
- the random vision tower trained at a tenth of the language model's learning rate (3e-4): the column
  of an object has to be read from the image tokens' values, and a frozen random tower's position
  embedding does not give it (at the full rate its features collapsed); a learning-rate schedule over
  the time budget (warmup, cosine), and a curriculum of single-shape images first, then images of
  several shapes where the target is the only one of its colour, then the whole mix.
- at evaluation, a background bias (`text4seg.infer.bias`) chosen on the val split: a small model that
  knows a row holds the object spreads that belief over many row tokens, so greedy decoding would keep
  the one background token.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import text4seg as t4s

MODEL_DIR = "model"
DATA_DIR = "data"
REPORT = "report.json"
EXAMPLES_PNG = "predictions.png"
LOSS_PNG = "loss.png"

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


@dataclass
class DemoConfig:
    """Every knob of the demo; the defaults are the measured default (bench/results/demo.md)."""

    minutes: float = 10.0
    seed: int = 0
    # data
    num_images: int = 6000
    image_size: int = 128
    eval_samples: int = 500  # drawn across the test split (`spread_sample`); evaluation is ~50 per second
    # model (build_tiny arguments; `merge` = Qwen's spatial merge, 1 = one token per patch)
    arch: str = "qwen3_vl"
    patch_size: int = 8
    merge: int = 1
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int | None = 256  # the language model's MLP width (None: 4 × hidden_size)
    vision_hidden_size: int = 64
    vision_layers: int = 2
    rope_theta: float | None = 100.0  # None: the architecture's default (10000)
    vision_positions: str = "sincos"  # "sincos": 2-D sin-cos start for the vision position table; "random"
    vision_position_scale: float | None = None  # None: the patch features' scale
    # the demo's levers (see the module docstring)
    question_first: bool = True
    fit_tokenizer: bool = True
    vocab_size: int = 2000
    answer_sentence: bool = False
    answer_prefix: bool = (
        True  # the answer opens with the expression's colour and kind ("red circle\n<seg>…")
    )
    target_label: str | None = "target"  # one fixed label for referred cells (None: the expression)
    whole_rows: bool = True  # the fitted tokenizer may make a whole descriptor row one token
    curriculum: int = 5000  # first training samples drawn from images holding a single shape (-1: all)
    color_stage: int = 10000  # then samples from several-shape images where only the target has its colour
    group_by_image: bool = False  # after the curriculum, an image's expressions follow one another
    # optimisation (`train_vision` False freezes the random vision tower; the projector always trains)
    train_vision: bool = True
    vision_lr: float | None = 3e-4
    projector_lr: float | None = 1e-3
    weight_decay: float = 0.0
    lr: float = 3e-3
    warmup_steps: int = 50
    batch_size: int = 8
    schedule_steps: int | None = None
    min_lr_ratio: float = 0.05
    max_steps: int | None = None
    # evaluation
    constrained: bool = True
    background_bias: float | None = None  # None: calibrated on the val split (text4seg.eval.calibrate)
    calibration_samples: int = 200
    examples: int = 12
    # torch threads, capped at the CPU count: alone on 2 cores, 2 threads make a step 1.25x faster; two
    # runs at once must take 1 each (on an oversubscribed CPU the threads spin: measured 20x slower)
    threads: int | None = 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def apply_overrides(cfg: DemoConfig, items: list[str]) -> DemoConfig:
    """Set `key=value` items (values read as YAML) on `cfg`; unknown keys and bad values raise ValueError."""
    import yaml

    fields = {f.name: f for f in dataclasses.fields(cfg)}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        value = yaml.safe_load(raw)
        current = getattr(cfg, key)
        if isinstance(current, bool) and not isinstance(value, bool):
            raise ValueError(f"--set {item!r}: {key} takes true or false")
        if isinstance(current, float) and not isinstance(value, bool):
            try:
                value = float(value)  # YAML reads 6e-3 (no dot) as a string
            except (TypeError, ValueError):
                pass
        if current is not None and value is not None and not isinstance(value, type(current)):
            raise ValueError(f"--set {item!r}: {key} takes a {type(current).__name__}")
        setattr(cfg, key, value)
    return cfg


@dataclass
class DemoResult:
    """What `run_demo` measured and wrote."""

    report: dict[str, Any]
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)


def _stage(progress: bool, text: str) -> None:
    if progress:
        print(f"[demo] {text}", flush=True)


# ------------------------------------------------------------------------------------------------ data
def make_data(cfg: DemoConfig, out_dir: Path, progress: bool = True):
    """Draw the synthetic shapes dataset and build its referring records (a DatasetDict)."""
    from text4seg.data.build import BuildConfig, build
    from text4seg.data.synthetic import make_synthetic

    root = out_dir / DATA_DIR
    paths = make_synthetic(
        root / "source", num_images=cfg.num_images, image_size=cfg.image_size, seed=cfg.seed
    )
    result = build(
        "refcoco",
        paths.refs,
        paths.images,
        root / "refcoco",
        BuildConfig(grid=16, seed=cfg.seed, progress=progress, target_label=cfg.target_label),
    )
    data = result.dataset
    counts = _shapes_per_image(paths.instances)
    data = data.map(lambda r: {"num_shapes": counts.get(int(r["source"]["image_id"]), 0)})
    for split in list(data):
        data[split] = data[split].add_column("color_unique", color_unique(data[split]))
    return answers_as_trained(data, cfg)


def answers_as_trained(records: Any, cfg: DemoConfig) -> Any:
    """`records` (a Dataset or DatasetDict built by `make_data`'s builder) with their answers in the form
    `cfg` trains on: colour and kind then the ``<seg>`` block, the block alone, or the full sentence."""
    if cfg.answer_prefix:
        return records.map(_prefix_answer, desc="answers opening with colour and kind")
    if not cfg.answer_sentence:
        return records.map(_drop_sentence, desc="answers without sentence")
    return records


def run_config(run_dir: str | Path) -> DemoConfig:
    """The answer form a finished demo run (`run_dir` = a `run_demo` output folder) trained with, read
    from its report's config; a report older than a field trained without it."""
    config = json.loads((Path(run_dir) / REPORT).read_text(encoding="utf-8"))["config"]
    return DemoConfig(
        answer_prefix=bool(config.get("answer_prefix", False)),
        answer_sentence=bool(config.get("answer_sentence", False)),
    )


def load_run_split(run_dir: str | Path, split: str = "test", cfg: DemoConfig | None = None) -> Any:
    """A split of a finished demo run's data with its answers in the form that run trained on
    (`cfg`, by default `run_config(run_dir)`)."""
    import datasets

    records = datasets.load_from_disk(str(Path(run_dir) / DATA_DIR / "refcoco"))[split]
    return answers_as_trained(records, cfg or run_config(run_dir))


def _shapes_per_image(instances: Path) -> dict[int, int]:
    """Annotations (shapes, crowd clusters included) per image id of a COCO instances file."""
    counts: dict[int, int] = {}
    for ann in json.loads(Path(instances).read_text(encoding="utf-8"))["annotations"]:
        counts[int(ann["image_id"])] = counts.get(int(ann["image_id"]), 0) + 1
    return counts


def color_unique(records: Any) -> list[bool]:
    """Per record: whether the target is the only described shape of its image with the colour its
    expression names (the expression's colour word alone picks it out). Read from the expressions of the
    image's other records; crowd clusters are drawn in colours no other shape has."""

    def color(expression: str) -> str | None:
        return _color_and_kind(expression)[0]

    colors: dict[int, dict[tuple[int, ...], str | None]] = {}
    for source, expression in zip(records["source"], records["expression"], strict=True):
        colors.setdefault(int(source["image_id"]), {})[tuple(source["ann_ids"])] = color(expression)
    out = []
    for source, expression in zip(records["source"], records["expression"], strict=True):
        own, target = color(expression), tuple(source["ann_ids"])
        others = (c for ann, c in colors[int(source["image_id"])].items() if ann != target)
        out.append(own is not None and all(c != own for c in others))
    return out


def _stage_draw(rng: np.random.Generator, pool: list[int], size: int) -> list[int]:
    if not pool or size <= 0:
        return []
    return [int(i) for i in rng.choice(pool, size=size, replace=len(pool) < size)]


def training_order(records: Any, cfg: DemoConfig) -> Any:
    """The training records in the order they are seen: `cfg.curriculum` samples from single-shape
    images first, then `cfg.color_stage` samples from images of several shapes where the target's colour
    alone picks it out (each stage shuffled), then every record (shuffled, or grouped by image with
    `cfg.group_by_image`); a negative curriculum trains on single-shape images only."""
    rng = np.random.default_rng(cfg.seed)
    shapes = records["num_shapes"]
    single = [i for i, n in enumerate(shapes) if n == 1]
    if cfg.curriculum < 0:
        return records.select(rng.permutation(single).tolist())
    head = _stage_draw(rng, single, cfg.curriculum)
    if cfg.color_stage > 0:
        unique = records["color_unique"]
        head += _stage_draw(rng, [i for i, n in enumerate(shapes) if n > 1 and unique[i]], cfg.color_stage)
    tail = _grouped_by_image(records, rng) if cfg.group_by_image else rng.permutation(len(records)).tolist()
    return records.select(head + tail)


def _grouped_by_image(records: Any, rng: np.random.Generator) -> list[int]:
    """Every record once: images in random order, each image's records (its expressions) together, so a
    batch holds the same picture asked about different shapes."""
    groups: dict[int, list[int]] = {}
    for index, source in enumerate(records["source"]):
        groups.setdefault(int(source["image_id"]), []).append(index)
    images = list(groups.values())
    return [int(i) for g in rng.permutation(len(images)) for i in rng.permutation(images[g])]


def spread_sample(records: Any, n: int, seed: int) -> Any:
    """`n` records drawn at random (seeded) across the split, in split order. The first `n` records would
    come from a few dozen images, since an image's expressions are consecutive: measured on the final
    demo model, the first 100 test expressions (about 30 images) scored gIoU 0.309, 500 drawn at random
    (339 images) 0.380."""
    if n >= len(records):
        return records
    picked = np.random.default_rng(seed).choice(len(records), size=n, replace=False)
    return records.select(sorted(int(i) for i in picked))


def _drop_sentence(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its answer reduced to the ``<seg>…</seg>`` block (a fixed-offset descriptor)."""
    messages = record["messages"]
    answer = messages[-1]["content"][0]["text"]
    start = answer.find(t4s.TEXT4SEG.open_tag)
    if start < 0:
        raise ValueError(f"record {record['id']}: the answer has no {t4s.TEXT4SEG.open_tag} block")
    last = dict(messages[-1], content=[{"type": "text", "text": answer[start:]}])
    return {"messages": [*messages[:-1], last]}


def _color_and_kind(expression: str) -> tuple[str | None, str | None]:
    """The first colour word and the first kind word of a synthetic expression (None where it has none)."""
    from text4seg.data.synthetic import COLORS, KINDS

    words = expression.split()
    return next((w for w in words if w in COLORS), None), next((w for w in words if w in KINDS), None)


def _prefix_answer(record: dict[str, Any]) -> dict[str, Any]:
    """The record with its answer reduced to the expression's colour and kind, then the ``<seg>…</seg>``
    block: two words at a fixed place, so the descriptor keeps its fixed offset and the model is taught
    directly to pick the colour and kind out of the question."""
    color, kind = _color_and_kind(record["expression"])
    if color is None or kind is None:
        raise ValueError(
            f"record {record['id']}: expression {record['expression']!r} names no colour and kind"
        )
    messages = _drop_sentence(record)["messages"]
    block = messages[-1]["content"][0]["text"]
    last = dict(messages[-1], content=[{"type": "text", "text": f"{color} {kind}\n{block}"}])
    return {"messages": [*messages[:-1], last]}


# ----------------------------------------------------------------------------------------------- model
def _answer_corpus(records: Any, limit: int = 3000) -> list[str]:
    texts = []
    for record in records.select(range(min(limit, len(records)))):
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

    fmt = t4s.TEXT4SEG
    tok = processor.tokenizer
    specials = [token.content for _, token in sorted(tok.added_tokens_decoder.items())]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_piece_pattern(fmt, whole_rows)), "isolated"),
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


def _piece_pattern(fmt: t4s.DescriptorFormat, whole_rows: bool) -> str:
    """Regex of the pre-tokenizer's pieces: a tag, a descriptor row or run, else a word, punctuation
    or space."""
    import re

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


def make_model(cfg: DemoConfig, train_records: Any, workdir: Path) -> tuple[Any, Any]:
    """The tiny random-initialised model and its processor, with the demo's levers applied."""
    from text4seg.models.positions import init_vision_positions
    from text4seg.models.tiny import build_tiny

    _, processor = build_tiny(cfg.arch, image_size=cfg.image_size, patch_size=cfg.patch_size, seed=cfg.seed)
    if cfg.fit_tokenizer:
        processor = fit_tokenizer(
            processor, _answer_corpus(train_records), cfg.vocab_size, workdir, whole_rows=cfg.whole_rows
        )
    vocab = len(processor.tokenizer)
    model, _ = build_tiny(
        cfg.arch,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_size=cfg.hidden_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        vision_hidden_size=cfg.vision_hidden_size,
        vision_layers=cfg.vision_layers,
        seed=cfg.seed,
        text_config=_text_overrides(cfg, vocab),
        vision_config=_vision_overrides(cfg),
    )
    if cfg.vision_positions == "sincos":
        init_vision_positions(model, cfg.vision_position_scale)
    elif cfg.vision_positions != "random":
        raise ValueError(f"vision_positions must be 'sincos' or 'random', got {cfg.vision_positions!r}")
    for part in ("image_processor", "video_processor"):
        sub = getattr(processor, part, None)
        if sub is not None and hasattr(sub, "merge_size"):
            sub.merge_size = cfg.merge
    if cfg.question_first:
        processor.chat_template = QUESTION_FIRST_TEMPLATE
        processor.tokenizer.chat_template = QUESTION_FIRST_TEMPLATE
    return model, processor


def _text_overrides(cfg: DemoConfig, vocab: int) -> dict[str, Any]:
    text: dict[str, Any] = {
        "vocab_size": vocab,
        "intermediate_size": cfg.intermediate_size or cfg.hidden_size * 4,
    }
    if cfg.rope_theta is not None:
        text["rope_parameters"] = {"rope_theta": float(cfg.rope_theta)}
    return text


def _vision_overrides(cfg: DemoConfig) -> dict[str, Any]:
    vision: dict[str, Any] = {"spatial_merge_size": cfg.merge}
    if cfg.arch == "qwen2_5_vl":  # full attention in every block (the image is only 16×16 patches)
        vision.update(window_size=cfg.image_size * 2, fullatt_block_indexes=list(range(cfg.vision_layers)))
    return vision


# ---------------------------------------------------------------------------------------------- train
def train_config(cfg: DemoConfig, run_dir: Path, progress: bool = True):
    """The `text4seg.train` configuration of the demo run (full fine-tuning, time budget)."""
    from text4seg.train.config import config_from_dict

    horizon = cfg.max_steps or cfg.schedule_steps or 100_000
    return config_from_dict(
        {
            "finetune": {
                "method": "full",
                "train_projector": True,
                "train_vision": cfg.train_vision,
                "vision_lr": cfg.vision_lr,
                "projector_lr": cfg.projector_lr,
            },
            "optim": {
                "lr": cfg.lr,
                "warmup_steps": cfg.warmup_steps,
                "scheduler": "cosine",
                # without a step horizon the budget is wall-clock time, so the decay follows the clock
                "schedule_by": "steps" if (cfg.schedule_steps or cfg.max_steps) else "time",
                "min_lr_ratio": cfg.min_lr_ratio,
                "weight_decay": cfg.weight_decay,
                "betas": [0.9, 0.98],
            },
            "loop": {
                "batch_size": cfg.batch_size,
                "max_steps": horizon,
                "epochs": 1000.0,
                "max_minutes": cfg.minutes,
                "log_every": 10,
                "eval_every": None,
                "seed": cfg.seed,
                "progress": progress,
            },
            "data": {"max_length": 2048, "eval_split": None, "max_eval_samples": None},
            "output": {"dir": str(run_dir), "resume": False},
        }
    )


# ------------------------------------------------------------------------------------------- measures
def reference_scores(records: Any, fmt: t4s.DescriptorFormat = t4s.TEXT4SEG, upsample: str = "bilinear"):
    """gIoU/cIoU of the all-background answer and of the ground truth passed through the codec."""
    from text4seg.eval.evaluate import ground_truth
    from text4seg.eval.metrics import ReferMetrics

    baseline, ceiling = ReferMetrics(), ReferMetrics()
    for record in records:
        truth = ground_truth(record)
        baseline.update(np.zeros_like(truth.mask), truth.mask, box=False)
        text = t4s.encode_mask(truth.mask, "target", fmt=fmt)
        coarse = t4s.decode(text, fmt=fmt).mask(truth.mask.shape)
        if upsample != "nearest":
            coarse = t4s.grid_to_mask(t4s.decode(text, fmt=fmt).grid != 0, truth.mask.shape, method=upsample)
        ceiling.update(np.asarray(coarse, dtype=bool), truth.mask, box=False)
    return baseline.compute(), ceiling.compute()


def _examples_sheet(records: Any, samples: list[dict[str, Any]], k: int, upsample: str):
    from text4seg import viz
    from text4seg.eval.evaluate import ground_truth

    examples = []
    for line in samples[:k]:
        record = records[int(line["index"])]
        truth = ground_truth(record)
        try:
            grid = t4s.decode(line["text"] or "").grid != 0
            pred = t4s.grid_to_mask(grid, truth.mask.shape, method=upsample)
        except ValueError:
            pred = np.zeros_like(truth.mask)
        iou = (line.get("coarse") or {}).get("iou")
        image = record["images"][0].convert("RGB")
        examples.append(
            viz.Example(image, truth.mask, np.asarray(pred, bool), str(record["expression"]), iou)
        )
    return viz.comparison_sheet(examples, tile=128, columns=2)


# --------------------------------------------------------------------------------------------- the run
def run_demo(out_dir: str | Path, cfg: DemoConfig | None = None, *, progress: bool = True) -> DemoResult:
    """Run the whole demo into `out_dir` (see the module docstring) and return its report."""
    import torch

    from text4seg import viz
    from text4seg.eval.calibrate import calibrate_background_bias
    from text4seg.eval.evaluate import evaluate
    from text4seg.infer import Segmenter
    from text4seg.train import train

    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(max(1, min(cfg.threads, os.cpu_count() or 1)))
    torch.manual_seed(cfg.seed)
    started = time.monotonic()

    _stage(progress, f"1/5 data: {cfg.num_images} synthetic images, {cfg.image_size} px")
    data = make_data(cfg, out, progress)
    train_records, held_out = data["train"], data["test"]
    held_out = spread_sample(held_out, cfg.eval_samples, cfg.seed)
    validation = spread_sample(data["val"], cfg.calibration_samples, cfg.seed)

    _stage(progress, "2/5 model: tiny random-initialised " + cfg.arch)
    model, processor = make_model(cfg, train_records, out / DATA_DIR / "processor")
    n_params = sum(p.numel() for p in model.parameters())

    _stage(progress, f"3/5 train: at most {cfg.minutes:g} min on {len(train_records)} records")
    run_dir = out / DATA_DIR / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    tcfg = train_config(cfg, run_dir, progress)
    ordered = train_records
    if cfg.curriculum or cfg.color_stage or cfg.group_by_image:
        ordered = training_order(train_records, cfg)
        tcfg.data.shuffle = False
    result = train(tcfg, train_dataset=ordered, model=model, processor=processor)
    model_dir = out / MODEL_DIR
    shutil.rmtree(model_dir, ignore_errors=True)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)

    _stage(progress, f"4/5 evaluate: {len(held_out)} held-out expressions")
    segmenter = Segmenter(
        model.eval(),
        processor,
        constrained=cfg.constrained,
        answer_sentences="templates" if cfg.answer_sentence else "free" if cfg.answer_prefix else "none",
        target_label=cfg.target_label,
    )
    calibration, unbiased = None, None
    if cfg.background_bias is None and len(validation):
        _stage(progress, f"    background bias: calibrating on {len(validation)} val expressions")
        calibration = calibrate_background_bias(segmenter, validation)
        segmenter.background_bias = 0.0
        unbiased = evaluate(segmenter, held_out, split="test", batch_size=8, progress=False).refer_coarse()
    segmenter.background_bias = calibration.bias if calibration else float(cfg.background_bias or 0.0)
    segmenter.save_settings(model_dir)
    report = evaluate(
        segmenter, held_out, split="test", batch_size=8, out_dir=out / "eval", progress=progress
    )
    coarse = report.refer_coarse()
    baseline, ceiling = reference_scores(held_out, upsample=segmenter.upsample)

    _stage(progress, "5/5 pictures")
    sheet = _examples_sheet(held_out, report.samples, cfg.examples, segmenter.upsample)
    sheet.save(out / EXAMPLES_PNG)
    steps, losses = _loss_history(result.metrics_path)
    viz.line_plot(steps, {"training loss": losses}, title="training loss (answer tokens)", log_y=True).save(
        out / LOSS_PNG
    )

    summary = {
        "gIoU": coarse["gIoU"],
        "cIoU": coarse["cIoU"],
        "prec@0.5": coarse.get("prec@0.5"),
        "baseline": {"gIoU": baseline["gIoU"], "cIoU": baseline["cIoU"], "what": "all-background answer"},
        "ceiling": {
            "gIoU": ceiling["gIoU"],
            "cIoU": ceiling["cIoU"],
            "what": "ground truth through the 16x16 descriptor and back",
        },
        "background_bias": segmenter.background_bias,
        "calibration": (
            {"metric": calibration.metric, "val_scores": calibration.scores, "val_samples": len(validation)}
            if calibration
            else None
        ),
        "without_bias": {"gIoU": unbiased["gIoU"], "cIoU": unbiased["cIoU"]} if unbiased else None,
        "held_out": len(held_out),
        "train_records": len(train_records),
        "steps": result.steps,
        "minutes": result.seconds / 60,
        "steps_per_second": result.steps / result.seconds if result.seconds else None,
        "stopped": result.stopped,
        "final_loss": float(np.mean(losses[-5:])) if losses else None,
        "parameters": n_params,
        "repaired_outputs": report.info.get("repaired_outputs"),
        "total_minutes": (time.monotonic() - started) / 60,
        "config": cfg.to_dict(),
        "model_dir": MODEL_DIR,
    }
    (out / REPORT).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    files = {
        "report": out / REPORT,
        "examples": out / EXAMPLES_PNG,
        "loss": out / LOSS_PNG,
        "model": model_dir,
    }
    return DemoResult(summary, out, files)


def _loss_history(path: Path) -> tuple[list[float], list[float]]:
    steps, losses = [], []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if "loss" in entry and "step" in entry and math.isfinite(float(entry["loss"])):
                steps.append(float(entry["step"]))
                losses.append(float(entry["loss"]))
    return steps, losses


def _bias_line(report: dict[str, Any]) -> list[str]:
    unbiased = report.get("without_bias")
    if not report.get("background_bias") or not unbiased:
        return []
    return [
        f"  background bias {report['background_bias']:g} (chosen on val); without it gIoU "
        f"{unbiased['gIoU']:.3f}  cIoU {unbiased['cIoU']:.3f}"
    ]


def format_summary(report: dict[str, Any]) -> str:
    """The lines `text4seg demo` prints at the end."""
    base, ceil = report["baseline"], report["ceiling"]
    return "\n".join(
        [
            f"held-out gIoU {report['gIoU']:.3f}  cIoU {report['cIoU']:.3f}  ({report['held_out']} expressions)",
            *_bias_line(report),
            f"  all-background baseline gIoU {base['gIoU']:.3f}  cIoU {base['cIoU']:.3f}",
            f"  16x16 ceiling (codec)   gIoU {ceil['gIoU']:.3f}  cIoU {ceil['cIoU']:.3f}",
            f"  {report['steps']} steps in {report['minutes']:.1f} min ({report['steps_per_second']:.2f} steps/s)",
        ]
    )
