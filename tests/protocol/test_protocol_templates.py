"""Question/answer templates: several per task, reproducible under a seeded RNG."""

from __future__ import annotations

import numpy as np
import pytest

from text4seg.protocol import templates


@pytest.mark.parametrize(
    ("task", "variant", "expression", "targets", "present"),
    [
        ("refer", "expression", "the red circle", ("the red circle",), (True,)),
        ("refer", "expression", "the green star", ("the green star",), (False,)),
        ("refer", "category", "circle", ("circle",), (True,)),
        ("instance", "", "square", ("square 1", "square 2"), (True, True)),
        ("semantic", "all", "circle, star", ("circle", "star"), (True, True)),
        ("semantic", "absent", "circle, star", ("circle", "star"), (True, False)),
    ],
)
def test_render_is_reproducible_and_varied(task, variant, expression, targets, present):
    turns = [
        templates.render(np.random.default_rng(seed), task, variant, expression, targets, present)
        for seed in range(40)
    ]
    again = [
        templates.render(np.random.default_rng(seed), task, variant, expression, targets, present)
        for seed in range(40)
    ]
    assert turns == again
    assert len({t.question for t in turns}) >= 3 and len({t.answer for t in turns}) >= 2
    for turn in turns:
        assert "{" not in turn.question + turn.answer
        if task == "refer" and variant == "expression":
            assert expression in turn.question
    if present == (True, False):
        assert all("star" in t.answer for t in turns)
    if present == (False,):
        assert all(
            t.answer
            not in [a.format(expression=expression, Expression=expression) for a in templates.REFER_ANSWERS]
            for t in turns
        )


def test_unknown_task_is_refused():
    with pytest.raises(ValueError, match="no templates"):
        templates.render(np.random.default_rng(0), "caption", "", "x")


def test_question_styles():
    assert templates.style_question("ours") is None and templates.style_question("ours", ["cat"]) is None
    refer = templates.style_question("text4seg")
    assert refer.format(expression="white horse") == "Can you segment the white horse in the image?"
    asked = templates.style_question("text4seg", ["cat", "dog {x}"])
    assert asked.format(classes="ignored") == "cat | dog {x}"  # a fixed question: braces survive formatting
    with pytest.raises(ValueError, match="question style must be one of"):
        templates.style_question("pipe")
