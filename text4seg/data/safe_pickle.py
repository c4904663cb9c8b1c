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
"""

from __future__ import annotations

import codecs
import io
import pickle
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


def _normalise(obj: Any) -> Any:
    """Decode UTF-8 bytes to str (keys and values), recursively; keep undecodable bytes as bytes."""
    if isinstance(obj, bytes):
        try:
            return obj.decode("utf-8")
        except UnicodeDecodeError:
            return obj
    if isinstance(obj, dict):
        return {_normalise(k): _normalise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normalise(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_normalise(v) for v in obj)
    return obj


def loads_pickle(data: bytes) -> Any:
    """`load_pickle` for bytes already in memory."""
    return _normalise(RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load())


def load_pickle(path: str | Path) -> Any:
    """Load a pickle of plain data (lists, dicts, strings, numbers) without running code.

    Raises `UnsafePickleError` naming the refused global when the file wants anything else.
    """
    with Path(path).open("rb") as handle:
        try:
            return _normalise(RestrictedUnpickler(handle, encoding="bytes").load())
        except UnsafePickleError as err:
            raise UnsafePickleError(f"{path}: {err}") from None
