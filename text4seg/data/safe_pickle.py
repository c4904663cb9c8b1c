"""Read the RefCOCO ``refs(*).p`` pickles without executing anything they contain.

A pickle is a program: plain ``pickle.load`` will import and call whatever the file names, so a
doctored ``refs(unc).p`` could run arbitrary code. The refs files only hold lists and dicts of
strings and numbers, so `load_pickle` uses an unpickler whose ``find_class`` refuses every global
except the three harmless ones that old pickle protocols need to build such data:

* ``set`` and ``frozenset`` (protocols 0-3 write sets as a call to them);
* ``_codecs.encode`` with the ``latin1`` codec only (protocols 0-2 written by Python 3 encode
  ``bytes`` that way).

Anything else - ``os.system``, ``builtins.eval``, class instances, persistent ids - raises
`UnsafePickleError` before it is built. Python 2 ``str`` objects arrive as bytes and are decoded as
UTF-8; bytes that are not valid UTF-8 are kept as ``bytes`` so the caller can report them.

A pickle can also be small and still expand: memo references let ``x = [x, x]`` forty times fit in
450 bytes and name 2**40 objects. The data built is therefore bounded by the file: at most
`MAX_NODES_PER_BYTE` objects per byte of pickle (each object a plain pickle names costs at least one
opcode byte, so only shared references go past it) and at most `MAX_DEPTH` levels of nesting (refs
are four deep); past either limit `UnsafePickleError` says which file and why.

`load_pickle_items` reads a pickled list for a build: the unpickler decodes Python 2 text as UTF-8
itself and each item is made plain data (bounds and all) only where it is used, in the process that
uses it (`PickleItems.plain`), so that a build's workers share that work; each process counts what it
built against the file's budget (at most ``num_proc`` times `load_pickle`'s bound in all).
"""

from __future__ import annotations

import codecs
import io
import pickle
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something other than plain containers, strings and numbers."""


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    if codecs.lookup(encoding).name != "iso8859-1" or errors != "strict":
        raise UnsafePickleError(f"refusing _codecs.encode with encoding {encoding!r}, errors {errors!r}")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only plain containers, strings, bytes and numbers."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[("builtins" if module == "__builtin__" else module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load global {module}.{name}: only plain containers, strings and numbers are allowed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"refusing persistent id {pid!r}")


MAX_NODES_PER_BYTE = 1
"""Objects the normalised data may hold per byte of pickle (plus `MIN_NODES`)."""
MIN_NODES = 10_000
MAX_DEPTH = 64
"""Deepest nesting of containers accepted (RefCOCO refs are four deep)."""


_PLAIN = frozenset({str, int, float, bool, complex, type(None)})
"""Leaf types kept as they are (checked by exact type, without a call per leaf)."""


def _too_many(budget: int) -> UnsafePickleError:
    return UnsafePickleError(
        f"the data expands to more than {budget:,} objects, far more than the file's size "
        "allows for plain data (shared references repeated many times)"
    )


class _Normaliser:
    """Decodes UTF-8 bytes to str (keys and values), keeping undecodable bytes as bytes, while counting
    the objects built against a budget and the nesting depth against `MAX_DEPTH`. A container's
    children are counted when it is reached, before it is rebuilt, and plain leaves are copied inline:
    refs files are mostly strings and numbers, and a call per leaf was most of the reading time."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.built = 0
        self.texts: dict[int, Any] = {}  # one decoded str per bytes object, however often it is referenced

    def _count(self, n: int) -> None:
        self.built += n
        if self.built > self.budget:
            raise _too_many(self.budget)

    def __call__(self, obj: Any, depth: int = 0) -> Any:
        self._count(1)
        return self._value(obj, depth)

    def _value(self, obj: Any, depth: int) -> Any:
        """``obj`` normalised; ``obj`` itself was counted already."""
        if type(obj) in _PLAIN:
            return obj
        if isinstance(obj, bytes):
            if id(obj) not in self.texts:
                try:
                    self.texts[id(obj)] = obj.decode("utf-8")
                except UnicodeDecodeError:
                    self.texts[id(obj)] = obj
            return self.texts[id(obj)]
        if not isinstance(obj, (dict, list, tuple, set, frozenset)):
            return obj
        if depth >= MAX_DEPTH:
            raise UnsafePickleError(f"containers nested more than {MAX_DEPTH} deep (or a cycle)")
        self._count(2 * len(obj) if isinstance(obj, dict) else len(obj))
        value, plain, inner = self._value, _PLAIN, depth + 1
        if isinstance(obj, dict):
            return {
                (k if type(k) in plain else value(k, inner)): (v if type(v) in plain else value(v, inner))
                for k, v in obj.items()
            }
        return type(obj)(v if type(v) in plain else value(v, inner) for v in obj)


@contextmanager
def _named_errors(name: str) -> Iterator[None]:
    """Any failure to read a pickle raised as one `UnsafePickleError` naming ``name``."""
    try:
        yield
    except UnsafePickleError as err:
        raise UnsafePickleError(f"{name}: {err}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError) as err:
        raise UnsafePickleError(f"{name}: not a readable pickle ({type(err).__name__}: {err})") from None
    except RecursionError:
        raise UnsafePickleError(f"{name}: nested too deeply to read") from None


def loads_pickle(data: bytes, name: str = "<bytes>") -> Any:
    """`load_pickle` for bytes already in memory; ``name`` is used in error messages."""
    with _named_errors(name):
        raw = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
        return _Normaliser(MIN_NODES + MAX_NODES_PER_BYTE * len(data))(raw)


_BUILT: dict[str, int] = {}
"""Objects built so far in this process, by `PickleItems` (its token)."""
_STR = frozenset({str})


class PickleItems:
    """The items of a pickled list, as the restricted unpickler built them, to be made plain data
    (`plain`) one by one where they are used: `load_pickle`'s result, item by item, and its bounds,
    counted per process (`_BUILT`). ``normalised`` when they are plain already (read by `load_pickle`)."""

    def __init__(self, items: list, name: str, budget: int, normalised: bool) -> None:
        self.items = items
        self.name = name
        self.budget = budget
        self.normalised = normalised
        self.token = secrets.token_hex(8)

    def plain(self, item: Any) -> Any:
        """``item`` as `load_pickle` would have built it; `UnsafePickleError` naming the file when the
        objects built in this process pass the file's budget or nest too deep."""
        if self.normalised:
            return item
        normaliser = _Normaliser(self.budget)
        normaliser.built = _BUILT.get(self.token, 1)  # 1: the list itself
        try:
            return normaliser(item, 1)
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{self.name}: {err}") from None
        finally:
            _BUILT[self.token] = normaliser.built

    def needs_plain(self, item: Any) -> bool:
        """Whether ``item`` may read differently before `plain`: not when it is a dict whose keys are
        all str and whose ``split`` is no bytes (a ref's fields as a build's main process reads them)."""
        if self.normalised:
            return False
        return (
            type(item) is not dict or not _STR.issuperset(map(type, item)) or type(item.get("split")) is bytes
        )


def load_pickle_items(path: str | Path) -> PickleItems:
    """A pickled list (refs) read without running code, its items left to `PickleItems.plain`. Text is
    decoded by the unpickler (UTF-8); a file holding text that is not UTF-8, or anything but a list at
    the top, is read by `load_pickle` instead (the items then plain already). Raises `UnsafePickleError`
    as `load_pickle` does."""
    data = Path(path).read_bytes()
    budget = MIN_NODES + MAX_NODES_PER_BYTE * len(data)
    with _named_errors(str(path)):
        try:
            items = RestrictedUnpickler(io.BytesIO(data), encoding="utf-8").load()
        except UnicodeDecodeError:
            items = None
        if type(items) is list and len(items) + 1 > budget:
            raise _too_many(budget)
    if type(items) is not list:
        return PickleItems(loads_pickle(data, str(path)), str(path), budget, True)
    return PickleItems(items, str(path), budget, False)


def load_pickle(path: str | Path) -> Any:
    """Load a pickle of plain data (lists, dicts, strings, numbers) without running code.

    Raises `UnsafePickleError` naming the file and why: a refused global, data expanding far beyond
    the file's size, nesting deeper than `MAX_DEPTH`, or bytes that are not a pickle.
    """
    return loads_pickle(Path(path).read_bytes(), str(path))
