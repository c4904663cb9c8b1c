"""Question and answer wording for the training records (our own phrasing).

Each task has several question templates and several answer sentences; `render` picks one of
each with the RNG it is given. The builder seeds that RNG from the build seed and the record id,
so a build is reproducible and does not depend on the order or the process that builds a record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

REFER_QUESTIONS: tuple[str, ...] = (
    "Please segment {expression} in this image.",
    "Can you find {expression} and give its mask?",
    "Which pixels belong to {expression}?",
    "Outline {expression} for me.",
    "Mark {expression} in the picture.",
    "Show me where {expression} is, as a segmentation mask.",
)
REFER_ANSWERS: tuple[str, ...] = (
    "Here is {expression}.",
    "This is the mask of {expression}.",
    "{Expression} is marked below.",
    "Sure, {expression} is segmented here.",
)
NO_TARGET_ANSWERS: tuple[str, ...] = (
    "There is no {expression} in this image, so the mask is empty.",
    "I cannot find {expression} here; nothing is marked.",
    "{Expression} does not appear in the picture.",
)
CATEGORY_QUESTIONS: tuple[str, ...] = (
    "Segment the {category} in this image.",
    "Please mark every {category} in the picture.",
    "Where is the {category}? Give one mask covering all of them.",
    "Which pixels show a {category}?",
)
CATEGORY_ANSWERS: tuple[str, ...] = (
    "Here is the {category} mask.",
    "Every {category} is marked below.",
    "These are the {category} pixels.",
)
INSTANCE_QUESTIONS: tuple[str, ...] = (
    "Segment each {category} separately, numbered from left to right.",
    "Give every {category} its own label ({category} 1, {category} 2, ...), left to right.",
    "Please mark the individual {category} instances in this image.",
    "How many {category} instances are there? Label each one separately.",
)
INSTANCE_ANSWERS: tuple[str, ...] = (
    "There {is_are} {count} {category} {instance_word}, labelled from left to right.",
    "I found {count} {category} {instance_word}; each has its own label.",
    "Each {category} is labelled separately below.",
)
SEMANTIC_ALL_QUESTIONS: tuple[str, ...] = (
    "Segment every object class in this image.",
    "Give a semantic segmentation of the whole picture.",
    "Label each region of the image with its class.",
    "What classes are in this image, and where? Answer with a segmentation.",
)
SEMANTIC_LIST_QUESTIONS: tuple[str, ...] = (
    "Segment these classes: {classes}.",
    "Please give a semantic segmentation for {classes}.",
    "Label the pixels of the following classes, everything else as background: {classes}.",
    "Where are the {classes}? Mark each with its class name.",
)
SEMANTIC_ANSWERS: tuple[str, ...] = (
    "Here is the semantic segmentation.",
    "Each region is labelled with its class.",
    "This is the segmentation; unlisted pixels are background.",
)
SEMANTIC_ABSENT_ANSWERS: tuple[str, ...] = (
    "Here is the segmentation; {missing} {does_do} not appear in the image.",
    "Each region is labelled with its class. There is no {missing} here.",
)

QUESTION_STYLES: tuple[str, ...] = ("ours", "text4seg")
"""How a model is asked when no question template is given: ``ours``, this package's first template of
each kind (`REFER_QUESTIONS`, `SEMANTIC_LIST_QUESTIONS`: "a, b and c"); ``text4seg``, the wording Text4Seg's
released checkpoints were trained on (its data scripts put the referring sentence verbatim into short
questions such as `TEXT4SEG_REFER_QUESTION`, and its semantic questions name the classes joined by " | ")."""
TEXT4SEG_REFER_QUESTION = "Can you segment the {expression} in the image?"
"""One of Text4Seg's referring question templates (the one its scripts keep when they use one alone)."""


def style_question(style: str, classes: tuple[str, ...] | list[str] | None = None) -> str | None:
    """The question template `style` asks a referring expression with (`classes` None; it has
    ``{expression}``), or the question it asks `classes` with (a fixed question, braces escaped for
    formatting); None for ``ours``: the asker's own first template. ValueError for an unknown style."""
    if style not in QUESTION_STYLES:
        raise ValueError(f"question style must be one of {list(QUESTION_STYLES)}, got {style!r}")
    if style == "ours":
        return None
    if classes is None:
        return TEXT4SEG_REFER_QUESTION
    return " | ".join(classes).replace("{", "{{").replace("}", "}}")


class Draws(Protocol):
    """What the templates draw from: ``integers(n)``, a uniform int in [0, n) (a ``numpy.random.Generator``,
    or the build's per-record `text4seg.data.seeded.RecordRng`, which draws the same values)."""

    def integers(self, high: int) -> object: ...


@dataclass(frozen=True)
class Turn:
    """The user question and the answer sentence that precedes the ``<seg>`` block."""

    question: str
    answer: str


def _pick(rng: Draws, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def render(
    rng: Draws,
    task: str,
    variant: str,
    expression: str,
    targets: tuple[str, ...] = (),
    present: tuple[bool, ...] = (),
) -> Turn:
    """Question and answer sentence for one record.

    ``task``/``variant``: ``refer``/``expression`` (a referring sentence; ``present[0]`` False means
    no target), ``refer``/``category`` (a COCO category, all instances merged), ``instance`` (one
    label per instance, ``targets`` are ``"cat 1"``, …) and ``semantic``/``all|subset|absent``
    (``targets`` are class names, ``present[k]`` whether class k is in the image).
    """
    if task == "refer" and variant == "category":
        fields = {"category": expression}
        return Turn(
            _pick(rng, CATEGORY_QUESTIONS).format(**fields), _pick(rng, CATEGORY_ANSWERS).format(**fields)
        )
    if task == "refer":
        fields = {"expression": expression, "Expression": _capitalise(expression)}
        answers = NO_TARGET_ANSWERS if present and not any(present) else REFER_ANSWERS
        return Turn(_pick(rng, REFER_QUESTIONS).format(**fields), _pick(rng, answers).format(**fields))
    if task == "instance":
        count = len(targets)
        fields = {
            "category": expression,
            "count": str(count),
            "is_are": "is" if count == 1 else "are",
            "instance_word": "instance" if count == 1 else "instances",
        }
        return Turn(
            _pick(rng, INSTANCE_QUESTIONS).format(**fields), _pick(rng, INSTANCE_ANSWERS).format(**fields)
        )
    if task == "semantic":
        classes = list(targets)
        if variant == "all":
            question = _pick(rng, SEMANTIC_ALL_QUESTIONS)
        else:
            question = _pick(rng, SEMANTIC_LIST_QUESTIONS).format(classes=_join(classes))
        missing = [name for name, here in zip(classes, present, strict=False) if not here]
        if missing:
            fields = {"missing": _join(missing), "does_do": "does" if len(missing) == 1 else "do"}
            answer = _pick(rng, SEMANTIC_ABSENT_ANSWERS).format(**fields)
        else:
            answer = _pick(rng, SEMANTIC_ANSWERS)
        return Turn(question, answer)
    raise ValueError(f"no templates for task {task!r} / variant {variant!r}")


def refer_answer_sentences(expression: str) -> tuple[str, ...]:
    """Every answer sentence the templates can write for a referring expression (target or none),
    as a model trained on template records may answer; order kept, duplicates dropped."""
    fields = {"expression": expression, "Expression": _capitalise(expression), "category": expression}
    options = REFER_ANSWERS + NO_TARGET_ANSWERS + CATEGORY_ANSWERS
    return tuple(dict.fromkeys(t.format(**fields) for t in options))
