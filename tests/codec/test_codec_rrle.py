import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import text4seg as t4s
from text4seg.codec import parse_strict

LABEL_ALPHABET = st.characters(
    whitelist_categories=("L", "N"), whitelist_characters=" -'é中", max_codepoint=0x9FFF
)
LABEL = (
    st.text(LABEL_ALPHABET, min_size=1, max_size=12)
    .map(str.strip)
    .filter(lambda s: s and s != "others" and " *" not in s)
)


@st.composite
def grids(draw):
    g = draw(st.sampled_from([8, 16, 24, 32]))
    labels = ["others", *draw(st.lists(LABEL, min_size=1, max_size=4, unique=True))]
    # blocky grids (runs) rather than white noise, like real masks
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, len(labels), size=(max(g // 4, 1), max(g // 4, 1)))
    grid = np.kron(coarse, np.ones((4, 4), dtype=int))[:g, :g].astype(np.int32)
    flips = rng.random(grid.shape) < 0.05
    grid[flips] = rng.integers(0, len(labels), size=int(flips.sum()))
    return g, grid, labels


@settings(max_examples=150, deadline=None)
@given(grids())
def test_round_trip_grid_text_grid(case):
    g, grid, labels = case
    fmt = t4s.TEXT4SEG.with_grid(g)
    text = t4s.grid_to_text(grid, labels, fmt)
    parsed, known = parse_strict(text, fmt, labels)
    np.testing.assert_array_equal(parsed, grid)
    # without the label list, labels come back by first appearance and map to the same cells
    d = t4s.decode(text, fmt, strict=True)
    assert d.ok and d.labels[0] == "others"
    np.testing.assert_array_equal(
        np.asarray(d.labels, dtype=object)[d.grid], np.asarray(labels, dtype=object)[grid]
    )
    # lenient parsing of well-formed text is exact and reports nothing
    lenient = t4s.decode(t4s.format_answer("Here it is.", text), fmt)
    assert lenient.report == []
    np.testing.assert_array_equal(
        np.asarray(lenient.labels, dtype=object)[lenient.grid], np.asarray(labels, dtype=object)[grid]
    )


def test_exact_example_from_the_spec():
    fmt = t4s.TEXT4SEG.with_grid((4, 8))
    grid = np.zeros((4, 8), dtype=int)
    grid[1:3, 2:5] = 1
    grid[2, 6:8] = 2
    expected = (
        "others *8\n others *2| red circle *3| others *3\n"
        " others *2| red circle *3| others *1| blue square *2\n others *8\n"
    )
    assert t4s.grid_to_text(grid, ["others", "red circle", "blue square"], fmt) == expected


def test_runs_never_cross_rows_and_match_reference_layout():
    fmt = t4s.TEXT4SEG.with_grid(4)
    grid = np.array([[0, 0, 0, 1], [1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    text = t4s.grid_to_text(grid, ["others", "cat"], fmt)
    assert text == "others *3| cat *1\n cat *4\n cat *1| others *3\n others *4\n"


def test_cell_text_is_uncompressed_and_longer():
    fmt = t4s.TEXT4SEG.with_grid(4)
    grid = np.eye(4, dtype=int)
    cells = t4s.grid_to_cell_text(grid, ["others", "dot"], fmt)
    assert cells.split("\n ")[0] == "dot| others| others| others"
    assert len(cells) > len(t4s.grid_to_text(np.zeros((4, 4), int), ["others", "dot"], fmt))


@pytest.mark.parametrize("label", ["", "  ", "a| b", "a *3", "two\nlines", " padded", "<seg>"])
def test_labels_that_break_the_format_are_refused(label):
    with pytest.raises(ValueError):
        t4s.encode_mask(np.ones((8, 8), bool), label, fmt=t4s.TEXT4SEG.with_grid(4))


def test_bad_label_lists_are_refused():
    fmt = t4s.TEXT4SEG.with_grid(2)
    with pytest.raises(ValueError, match="background"):
        t4s.grid_to_text(np.zeros((2, 2), int), ["bg", "cat"], fmt)
    with pytest.raises(ValueError, match="duplicate"):
        t4s.grid_to_text(np.zeros((2, 2), int), ["others", "cat", "cat"], fmt)
    with pytest.raises(ValueError, match="index"):
        t4s.grid_to_text(np.full((2, 2), 3), ["others", "cat"], fmt)


FMT4 = t4s.TEXT4SEG.with_grid(4)
GOOD = "others *4\n others *1| cat *2| others *1\n others *4\n others *4\n"


@pytest.mark.parametrize(
    ("text", "row", "col", "offset"),
    [
        (GOOD.replace("cat *2", "cat *x"), 1, 1, GOOD.index("cat *2") + 5),
        (GOOD.replace("cat *2", "cat *3"), 1, 4, GOOD.index("| others *1\n") + 10),
        (GOOD.replace("cat *2| others *1", "cat *2"), 1, 3, GOOD.index("cat *2") + 6),
        (GOOD.replace("cat *2", "cat 2"), 1, 1, GOOD.index("cat *2")),
        (GOOD.replace("cat *2", "cat *02"), 1, 1, GOOD.index("cat *2") + 5),
        (GOOD.replace("cat *2", "cat *0| cat *2"), 1, 1, GOOD.index("cat *2") + 5),
        (GOOD.replace("| cat", "|  cat"), 1, 1, GOOD.index("| cat") + 2),
        (GOOD[:-1], None, None, len(GOOD) - 1),
        (GOOD + " others *4\n", None, None, len(GOOD) + len(" others *4")),
        ("others *4\n others *4\n", None, None, len("others *4\n others *4")),
    ],
)
def test_strict_reports_the_first_problem_with_position(text, row, col, offset):
    with pytest.raises(t4s.DescriptorParseError) as info:
        t4s.decode(text, FMT4, strict=True)
    assert (info.value.row, info.value.col, info.value.offset) == (row, col, offset)


def test_strict_offsets_count_from_the_whole_answer():
    bad = GOOD.replace("cat *2", "cat *x")
    answer = "Sure.\n<seg>" + bad + "</seg>"
    with pytest.raises(t4s.DescriptorParseError) as info:
        t4s.decode(answer, FMT4, strict=True)
    assert answer[info.value.offset] == "x"


def test_strict_refuses_unknown_labels_and_bad_tags():
    with pytest.raises(t4s.DescriptorParseError, match="unknown label"):
        t4s.decode(GOOD, FMT4, strict=True, labels=["others", "dog"])
    with pytest.raises(t4s.DescriptorParseError, match="never closed"):
        t4s.decode("<seg>" + GOOD, FMT4, strict=True)
    with pytest.raises(t4s.DescriptorParseError, match="without"):
        t4s.decode(GOOD + "</seg>", FMT4, strict=True)


def test_lenient_repairs_row_by_row():
    # row 1 is short: the reference decoder would shift every later row; we pad that row only.
    text = "others *4\n cat *2\n others *1| cat *3\n cat *4\n"
    d = t4s.decode(text, FMT4)
    np.testing.assert_array_equal(d.grid, [[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])
    assert [r.kind for r in d.report] == ["row_padded"] and d.report[0].row == 1


@pytest.mark.parametrize(
    ("text", "kinds"),
    [
        ("others *4\n others *4\n", {"rows_padded"}),
        (GOOD + " cat *4\n", {"rows_cut"}),
        (GOOD.replace("others *1\n", "others *5\n"), {"row_cut"}),
        (GOOD.replace("cat *2", "cat *"), {"bad_count"}),
        (GOOD.replace("cat *2", "dgo *2"), {"unknown_label"}),
        ("Sure, here:\n<seg>" + GOOD, {"missing_close_tag"}),
        (GOOD + "</seg>", {"missing_open_tag"}),
        ("<seg>" + GOOD + "</seg> and more text", {"text_after_close_tag"}),
        ("<seg>" + GOOD + "</seg><seg>" + GOOD + "</seg>", {"multiple_segments"}),
        (GOOD[:-1], {"missing_end"}),
        (GOOD.replace("\n ", "\n"), {"separators"}),
    ],
)
def test_lenient_says_what_it_repaired(text, kinds):
    d = t4s.decode(text, FMT4, labels=["others", "cat", "dog"])
    assert d.grid.shape == (4, 4)
    assert {r.kind for r in d.report} == kinds


def test_unknown_label_maps_to_closest_known_label():
    d = t4s.decode(GOOD.replace("cat *2", "cats *2"), FMT4, labels=["others", "cat"])
    assert d.grid[1, 1] == 1 and d.report[0].kind == "unknown_label"
    d = t4s.decode(GOOD.replace("cat *2", "zebra *2"), FMT4, labels=["others", "cat"])
    assert d.grid[1, 1] == 0


def test_lenient_drops_labels_only_seen_in_cut_text():
    d = t4s.decode("others *4| junk *9\n" * 4, FMT4)
    assert d.labels == ["others"] and not d.grid.any()


def test_extract_segments_finds_every_block():
    answer = "a <seg>x *1\n</seg> b <seg>y *2\n</seg> <seg>unclosed"
    assert t4s.extract_segments(answer) == ["x *1\n", "y *2\n"]
    assert t4s.extract_segments("no tags") == []


def test_format_answer_matches_reference_layout():
    assert t4s.format_answer("It is here.", "others *4\n") == "It is here.\n<seg>others *4\n</seg>"


def test_descriptor_grid_size_reads_any_grid_and_refuses_malformed_text():
    from text4seg.codec import descriptor_grid_size

    grid = np.zeros((5, 7), dtype=np.int64)
    grid[1:3, 2:5] = 1
    text = t4s.grid_to_text(grid, ["others", "red circle"])
    assert descriptor_grid_size(text) == (5, 7)
    assert descriptor_grid_size(text.replace("*7", "*6", 1)) is None  # first row short of the others
    assert descriptor_grid_size("others *4\n others *4") is None  # no final newline
    assert descriptor_grid_size("hello") is None


# --- hostile and malformed text (the issue "codec hardening") ---

OLD_FUZZY_RUN = re.compile(r"^(?P<label>.*?)\s*\*\s*(?P<count>\S*)\s*$", re.DOTALL)


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from(list("ab*3 \t|\xa0\x1c\u2028")), min_size=1, max_size=30).map(str.strip))
def test_linear_run_split_matches_the_old_regex(piece):
    from text4seg.codec.rrle import _split_fuzzy_run

    if not piece:
        return
    old = OLD_FUZZY_RUN.match(piece)
    new = _split_fuzzy_run(piece, "*")
    if old is None:
        assert new is None
    else:
        assert new is not None and (new[0].strip(), new[1]) == (old["label"].strip(), old["count"])


@pytest.mark.parametrize("labels", [None, ["others", "red circle"]])
def test_long_whitespace_inside_a_run_decodes_in_linear_time(labels):
    # the old regex backtracked quadratically: 64k spaces took 5.7 s, 128k 22.7 s
    rows = ["others *16"] * 16
    rows[3] = "others *4| red circle" + " \t" * 100_000 + "x*8| others *4"
    start = time.perf_counter()
    d = t4s.decode("\n ".join(rows) + "\n", labels=labels)
    assert time.perf_counter() - start < 0.5
    assert d.grid.shape == (16, 16) and d.report


def test_many_lines_of_prose_decode_in_linear_time():
    # dropping leading lines one list.pop(0) at a time was quadratic (200k lines: 5.2 s); four times
    # the lines must take about four times as long (a quadratic decoder takes sixteen)
    def best_time(lines: int) -> float:
        text = "no rows here\n" * lines
        return min(_seconds(lambda: t4s.decode(text)) for _ in range(3))

    assert best_time(100_000) < 8 * best_time(25_000)
    d = t4s.decode("no rows here\n" * 1000)
    assert not d.grid.any() and [r.kind for r in d.report] == ["text_before", "rows_padded"]


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_a_count_of_thousands_of_digits_never_raises_leniently_and_is_located_strictly():
    huge = "9" * 5000  # above Python's 4,300-digit int-conversion limit
    text = GOOD.replace("cat *2", "cat *" + huge)
    d = t4s.decode(text, FMT4)
    assert d.grid[1].tolist() == [0, 1, 1, 1] and {r.kind for r in d.report} == {"row_cut"}
    with pytest.raises(t4s.DescriptorParseError, match="more than 4 cells") as info:
        t4s.decode(text, FMT4, strict=True)
    assert (info.value.row, info.value.col, info.value.offset) == (1, 1, text.index(huge))
    assert t4s.decode("others *" + huge + "\n", FMT4).report  # the fuzzy path too


def test_count_wider_than_the_row_is_a_repair():
    d = t4s.decode(GOOD.replace("cat *2| others *1", "cat *999999"), FMT4)
    assert d.grid[1].tolist() == [0, 1, 1, 1] and [r.kind for r in d.report] == ["row_cut"]


@pytest.mark.parametrize("sentence", ["Sure, here is the red circle.", "Here:", "It is the *red* one."])
def test_prose_before_untagged_rows_is_dropped_not_read_as_a_label(sentence):
    desc = "others *4\n others *1| red circle *2| others *1\n others *4\n others *4\n"
    d = t4s.decode(sentence + "\n" + desc, FMT4)
    assert d.labels == ["others", "red circle"]
    assert d.grid[0].tolist() == [0, 0, 0, 0] and d.grid[1].tolist() == [0, 1, 1, 0]
    assert [r.kind for r in d.report] == ["text_before"]
    with pytest.raises(t4s.DescriptorParseError, match="bad label") as info:
        t4s.decode(sentence + "\n" + desc, FMT4, strict=True)
    assert (info.value.row, info.value.offset) == (0, 0)


def test_descriptor_grid_size_refuses_huge_claims_without_allocating():
    from text4seg.codec import MAX_GRID_SIDE, descriptor_grid_size

    wide = ("others *999999| " * 1024)[:-2] + "\n"  # 16 KB claiming 10^9 columns (was 60 GB)
    tall = "others *1" + "\n others *1" * MAX_GRID_SIDE + "\n"
    for text in (wide, tall):
        start = time.perf_counter()
        assert descriptor_grid_size(text) is None
        assert time.perf_counter() - start < 0.1
    with pytest.raises(t4s.DescriptorParseError, match="MAX_GRID_SIDE") as info:
        descriptor_grid_size(wide, strict=True)
    assert (info.value.row, info.value.offset) == (0, len("others *"))
    with pytest.raises(t4s.DescriptorParseError, match="rows") as info:
        descriptor_grid_size(tall, strict=True)
    assert info.value.row == MAX_GRID_SIDE and tall[info.value.offset :].startswith("others *1\n")
    edge = "others *1024" + "\n others *1024" * (MAX_GRID_SIDE - 1) + "\n"
    assert descriptor_grid_size(edge) == (MAX_GRID_SIDE, MAX_GRID_SIDE)
    with pytest.raises(ValueError, match="MAX_GRID_SIDE"):
        t4s.TEXT4SEG.with_grid(MAX_GRID_SIDE + 1)


def test_deprecated_rle_module_still_imports():
    import importlib
    import sys

    sys.modules.pop("text4seg.codec.rle", None)
    with pytest.warns(DeprecationWarning, match="rrle"):
        old = importlib.import_module("text4seg.codec.rle")
    assert old.parse_lenient is t4s.codec.parse_lenient and old.check_labels is t4s.codec.check_labels


def test_an_answer_with_no_row_at_all_is_no_target():
    d = t4s.decode("I cannot find it in the image.")
    assert d.is_empty and "text_before" in {r.kind for r in d.report}


def _reference_text(grid: np.ndarray, labels: list[str], fmt: t4s.DescriptorFormat) -> str:
    """R-RLE written cell by cell, the plain way (what `grid_to_text` must give)."""
    rows = []
    for row in grid.tolist():
        runs, start = [], 0
        for j in range(1, len(row) + 1):
            if j == len(row) or row[j] != row[start]:
                runs.append(f"{labels[row[start]]}{fmt.count_sep}{j - start}")
                start = j
        rows.append(fmt.run_sep.join(runs))
    return fmt.row_sep.join(rows) + fmt.end


@settings(max_examples=100, deadline=None)
@given(st.lists(grids(), min_size=1, max_size=4))
def test_unchecked_writer_equals_grid_to_text(cases):
    """The build's fast path (no label or grid checks, rows remembered across calls with the same
    labels) writes exactly what the checked `grid_to_text` writes."""
    from text4seg.codec.rrle import write_checked_grid

    remembered: dict = {}
    for g, grid, labels in cases:
        fmt = t4s.TEXT4SEG.with_grid(g)
        expected = t4s.grid_to_text(grid, labels, fmt)
        assert expected == _reference_text(grid, labels, fmt)
        assert write_checked_grid(grid, labels, fmt) == expected
        fixed = ["others", "target"]  # a shared row memory is only valid for one label list
        binary = (grid > 0).astype(np.int32)
        assert write_checked_grid(binary, fixed, fmt, remembered) == t4s.grid_to_text(binary, fixed, fmt)
