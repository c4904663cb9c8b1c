"""The lenient decoder never raises and always returns a grid of the format's shape."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import text4seg as t4s

FMT = t4s.TEXT4SEG.with_grid(8)


def _valid_text(seed: int) -> str:
    rng = np.random.default_rng(seed)
    grid = rng.integers(0, 3, size=(8, 8)) * (rng.random((8, 8)) < 0.5)
    return t4s.format_answer("Sure.", t4s.grid_to_text(grid, ["others", "red circle", "dog 2"], FMT), FMT)


def _mutate(text: str, ops: list[tuple[int, int, str]]) -> str:
    for kind, pos, chunk in ops:
        pos = pos % (len(text) + 1)
        if kind == 0:
            text = text[:pos]
        elif kind == 1:
            text = text[:pos] + chunk + text[pos:]
        elif kind == 2:
            text = text[:pos] + text[pos + len(chunk) + 1 :]
        elif kind == 3:
            text = text.replace(chunk or "|", "", 1)
        else:
            lines = text.split("\n")
            del lines[pos % len(lines)]
            text = "\n".join(lines)
    return text


def _check(text: str, **kw) -> None:
    d = t4s.decode(text, FMT, **kw)
    assert d.grid.shape == (8, 8)
    assert d.grid.dtype == np.int32
    assert d.grid.min() >= 0 and d.grid.max() < len(d.labels)
    assert d.labels[0] == "others"
    assert d.to_mask((5, 7)).shape == (5, 7)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_random_text_never_raises(text):
    _check(text)
    _check(text, labels=["others", "red circle"])


PIECES = st.sampled_from(
    ["|", "| ", " *", "*", "\n", "\n ", "<seg>", "</seg>", "99999999", "0", "-3", "x", "others", " "]
)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(0, 10_000),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10_000), PIECES), min_size=1, max_size=6),
)
def test_mutated_descriptors_never_raise(seed, ops):
    text = _mutate(_valid_text(seed), ops)
    _check(text)
    _check(text, labels=["others", "red circle", "dog 2"])


def test_huge_counts_and_long_garbage_are_bounded():
    _check("others *999999| cat *999999" * 2000 + "\n")
    _check("<seg>" + "x" * 200_000)
    _check("\n" * 10_000)
    _check(None)
