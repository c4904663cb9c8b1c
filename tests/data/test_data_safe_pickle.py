"""The refs unpickler builds plain data only and refuses anything that would run code."""

from __future__ import annotations

import codecs
import os
import pickle
from collections import OrderedDict

import pytest

from text4seg.data.safe_pickle import UnsafePickleError, load_pickle, load_pickle_items, loads_pickle


class _MakeDir:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


class _Rot13:
    def __reduce__(self):
        return (codecs.encode, ("abc", "rot13"))


def test_refuses_malicious_pickle_without_running_it(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 0, "sentences": [_MakeDir(str(target))]}], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"posix\.mkdir|os\.mkdir") as info:
        load_pickle(path)
    assert str(path) in str(info.value)
    assert not target.exists()


@pytest.mark.parametrize(
    "payload", [OrderedDict(a=1), _Rot13(), eval], ids=["class", "codec", "builtin-eval"]
)
def test_refuses_other_globals(payload):
    with pytest.raises(UnsafePickleError):
        loads_pickle(pickle.dumps(payload, protocol=2))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_plain_data_round_trips(protocol):
    data = [
        {"ref_id": 3, "split": "train", "ids": (1, 2), "tags": {1, 2}, "x": 1.5, "none": None, "ok": True}
    ]
    assert loads_pickle(pickle.dumps(data, protocol=protocol)) == data


def test_python2_style_bytes_become_text_unless_not_utf8():
    data = [{b"sent": b"the red circle", b"raw": b"\xff\xfe broken"}]
    assert loads_pickle(pickle.dumps(data, protocol=2)) == [
        {"sent": "the red circle", "raw": b"\xff\xfe broken"}
    ]


def _nested_pickle(depth: int) -> bytes:
    """A protocol-2 pickle of a list nested ``depth`` deep, written by hand (pickle.dumps would recurse)."""
    return b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."


def test_shared_reference_bomb_is_refused_quickly(tmp_path):
    x: list = []
    for _ in range(40):
        x = [x, x]  # 2**40 leaves once expanded
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(x, protocol=2))
    assert path.stat().st_size < 1000
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p: the data expands to more than"):
        load_pickle(path)


def test_deep_nesting_and_cycles_are_refused():
    with pytest.raises(UnsafePickleError, match="nested more than"):
        loads_pickle(_nested_pickle(100_000), "deep.p")
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(UnsafePickleError, match="nested more than"):
        loads_pickle(pickle.dumps(cycle, protocol=2), "cycle.p")


def test_broken_pickle_is_one_clear_error(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1}], protocol=2)[:-3])
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p: not a readable pickle"):
        load_pickle(path)


def test_shared_strings_are_decoded_once():
    text = b"a long sentence " * 100
    refs = [{"sent": text} for _ in range(50)]
    loaded = loads_pickle(pickle.dumps(refs, protocol=2))
    assert all(ref["sent"] is loaded[0]["sent"] for ref in loaded)
    assert loaded[0]["sent"] == text.decode()


def _py2_text(text: bytes) -> bytes:
    """A Python 2 ``str`` as Python 2's pickler writes it (SHORT_BINSTRING), which Python 3 cannot write."""
    return b"U" + bytes([len(text)]) + text


def _py2_refs(*texts: bytes) -> bytes:
    """A protocol-2 pickle of ``[{"sent": text}, ...]`` with Python 2 text keys and values."""
    body = b"".join(b"}" + _py2_text(b"sent") + _py2_text(text) + b"s" + b"a" for text in texts)
    return b"\x80\x02]" + body + b"."


def test_pickle_items_made_plain_one_by_one_equal_load_pickle(tmp_path):
    refs = [
        {"ref_id": 1, "split": "train", "sentences": [{"sent": "a red circle", "tokens": ["a", "red"]}]},
        {b"ref_id": 2, "split": b"val", "sentences": [{"sent": b"\xff broken", "raw": b"ok"}]},
        {"ref_id": 3, "ids": (1, 2), "tags": {1, 2}, "x": 1.5, "none": None},
    ]
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps(refs, protocol=2))
    items = load_pickle_items(path)
    assert not items.normalised
    assert [items.plain(item) for item in items.items] == load_pickle(path)
    assert [items.needs_plain(item) for item in items.items] == [False, True, False]
    py2 = tmp_path / "py2.p"
    py2.write_bytes(_py2_refs(b"the cat", b"caf\xc3\xa9"))
    assert load_pickle_items(py2).items == load_pickle(py2) == [{"sent": "the cat"}, {"sent": "café"}]
    broken = tmp_path / "broken.p"
    broken.write_bytes(_py2_refs(b"the cat", b"\xff\xfe"))
    read = load_pickle_items(broken)  # text that is not UTF-8: read as load_pickle reads it, bytes kept
    assert read.normalised and read.items == load_pickle(broken) == [
        {"sent": "the cat"},
        {"sent": b"\xff\xfe"},
    ]


def test_pickle_items_keep_the_bounds_and_refuse_code(tmp_path):
    x: list = []
    for _ in range(40):
        x = [x, x]
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 0}, {"ref_id": 1, "bomb": x}], protocol=2))
    items = load_pickle_items(path)
    assert items.plain(items.items[0]) == {"ref_id": 0}
    with pytest.raises(UnsafePickleError, match=r"refs\(unc\)\.p: the data expands to more than"):
        items.plain(items.items[1])
    many = tmp_path / "many.p"  # each item within the file's budget, all of them together past it
    shared = list(range(6_000))
    many.write_bytes(pickle.dumps([{"ids": shared} for _ in range(8)], protocol=2))
    assert loads_pickle(pickle.dumps({"ids": shared}, protocol=2))
    with pytest.raises(UnsafePickleError, match="expands to more than"):
        load_pickle(many)
    spread = load_pickle_items(many)
    assert spread.plain(spread.items[0]) == {"ids": shared}
    with pytest.raises(UnsafePickleError, match=r"many\.p: the data expands to more than"):
        for item in spread.items[1:]:
            spread.plain(item)
    evil = tmp_path / "evil.p"
    evil.write_bytes(
        pickle.dumps([{"ref_id": 0, "sentences": [_MakeDir(str(tmp_path / "pwned"))]}], protocol=2)
    )
    with pytest.raises(UnsafePickleError, match="refusing to load global"):
        load_pickle_items(evil)
    assert not (tmp_path / "pwned").exists()
