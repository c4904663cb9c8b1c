"""Questions and label sets for prediction, worded with the training templates (text4seg.protocol.templates).

A referring expression (a string) becomes the labels `[background, expression]` and a referring
question; a list of class names becomes `[background, *classes]` and a semantic question. The answer
sentences the templates can produce are returned too, for the constrained-decoding grammar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from text4seg.codec import TEXT4SEG, DescriptorFormat, check_label
from text4seg.protocol import templates

MAX_EXPRESSION_CHARS = 500
"""The library's limit on a referring expression or one class name, in characters (after whitespace is
collapsed). The label is written once per run of the answer, so the answer's length grows with it; longer
ones are refused before any model work. A `Segmenter` also refuses a label its model's context cannot hold."""


@dataclass(frozen=True)
class Query:
    """What to ask the model for one image: the question, the label set and the template answer sentences."""

    question: str
    labels: tuple[str, ...]
    task: str  # "refer" or "semantic"
    answer_sentences: tuple[str, ...] | None  # None: the templates allow too many sentences to list


def _clean(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a string, got {type(text).__name__}")
    cleaned = " ".join(text.split())
    if not cleaned:
        raise ValueError(f"{what} is empty")
    if len(cleaned) > MAX_EXPRESSION_CHARS:
        raise ValueError(
            f"{what} is {len(cleaned):,} characters long; the limit is {MAX_EXPRESSION_CHARS} "
            "(text4seg.infer.prompts.MAX_EXPRESSION_CHARS)"
        )
    return cleaned


def make_query(
    expression_or_classes: str | Sequence[str],
    fmt: DescriptorFormat = TEXT4SEG,
    question: str | None = None,
) -> Query:
    """The `Query` for a referring expression (str) or a list of class names.

    `question` overrides the template: a format string with `{expression}` (or `{classes}`), or a
    fixed question. Raises ValueError for an empty expression or class list, or one longer than
    `MAX_EXPRESSION_CHARS`, and `LabelError` for a label the descriptor format cannot hold (one
    containing a separator).
    """
    if isinstance(expression_or_classes, str):
        expression = _clean(expression_or_classes, "expression")
        if expression == fmt.background:
            raise ValueError(f"the expression may not be the background label {fmt.background!r}")
        check_label(expression, fmt)
        template = question if question is not None else templates.REFER_QUESTIONS[0]
        fields = {"expression": expression, "Expression": expression[:1].upper() + expression[1:]}
        sentences = templates.refer_answer_sentences(expression)
        return Query(template.format(**fields), (fmt.background, expression), "refer", sentences)
    if not isinstance(expression_or_classes, Sequence):
        raise TypeError(
            "expected an expression string or a list of class names, got "
            f"{type(expression_or_classes).__name__}"
        )
    classes = [_clean(c, "class name") for c in expression_or_classes]
    if not classes:
        raise ValueError("the class list is empty")
    if len(set(classes)) != len(classes):
        raise ValueError(f"the class list repeats a name: {classes}")
    for name in classes:
        if name == fmt.background:
            raise ValueError(f"the class list may not contain the background label {fmt.background!r}")
        check_label(name, fmt)
    joined = classes[0] if len(classes) == 1 else ", ".join(classes[:-1]) + " and " + classes[-1]
    template = question if question is not None else templates.SEMANTIC_LIST_QUESTIONS[0]
    # Semantic answers may name any subset of absent classes: too many to list, so the sentence is free.
    return Query(template.format(classes=joined), (fmt.background, *classes), "semantic", None)
