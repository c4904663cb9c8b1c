"""The template choices of a record, drawn as ``np.random.default_rng([seed, crc32(id)]).integers(n)`` draws,
without making a numpy Generator per record.

A record's choices must depend on the build seed and its id only (not on the process or the order it was
made in), hence one generator per record; numpy's costs about 75 µs to make (SeedSequence, PCG64, the
Generator and its lock), more than the rest of the record. `RecordRng` computes the same stream in plain
Python in about a sixth of that: numpy's SeedSequence mixing of the entropy words, PCG64 seeding (XSL-RR
128/64 output, its 32-bit draws served from the low then the high half of a 64-bit output) and Lemire's
bounded integers, as numpy implements them. The test compares it with numpy draw for draw, so the records
are those numpy's generator gives.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

_M32 = 0xFFFFFFFF
_M64 = (1 << 64) - 1
_M128 = (1 << 128) - 1
_MULT_A, _MULT_B = 0x931E8875, 0x58F38DED  # SeedSequence hash multipliers
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715  # SeedSequence mix multipliers
_POOL = 4  # SeedSequence's pool size, in 32-bit words
_PCG_MULT = (2549297995355413924 << 64) + 4865540595714422341
_PAIRS = [(s, d) for s in range(_POOL) for d in range(_POOL) if s != d]


def _powers(start: int, mult: int, n: int) -> list[int]:
    out = [start]
    for _ in range(n):
        out.append((out[-1] * mult) & _M32)
    return out


_HASH_A = _powers(0x43B0D7E5, _MULT_A, 64)  # the hash constant of each successive mixing step
_HASH_B = _powers(0x8B51F9DD, _MULT_B, 8)  # ... and of each state word generated


def _words(value: int) -> list[int]:
    """A non-negative integer as little-endian 32-bit words (SeedSequence's entropy coercion)."""
    if value < 0:
        raise ValueError(f"expected non-negative integer seed, got {value}")
    out = [value & _M32]
    while value := value >> 32:
        out.append(value & _M32)
    return out


def _pool(words: list[int]) -> list[int]:
    """SeedSequence's entropy pool after mixing ``words`` in."""
    steps = _POOL + len(_PAIRS) + _POOL * max(0, len(words) - _POOL) + 1
    while len(_HASH_A) < steps:
        _HASH_A.append((_HASH_A[-1] * _MULT_A) & _M32)
    ha = _HASH_A
    mixer = []
    for i in range(_POOL):
        v = ((words[i] if i < len(words) else 0) ^ ha[i]) * ha[i + 1] & _M32
        mixer.append(v ^ (v >> 16))
    k = _POOL
    for s, d in _PAIRS:
        h = (mixer[s] ^ ha[k]) * ha[k + 1] & _M32
        k += 1
        r = (_MIX_L * mixer[d] - _MIX_R * (h ^ (h >> 16))) & _M32
        mixer[d] = r ^ (r >> 16)
    for word in words[_POOL:]:
        for d in range(_POOL):
            h = (word ^ ha[k]) * ha[k + 1] & _M32
            k += 1
            r = (_MIX_L * mixer[d] - _MIX_R * (h ^ (h >> 16))) & _M32
            mixer[d] = r ^ (r >> 16)
    return mixer


def _pcg_seed(mixer: list[int]) -> tuple[int, int]:
    """PCG64's (state, increment) seeded from four 64-bit words the pool generates."""
    return _pcg_state(_state_words(mixer))


def _state_words(mixer: list) -> list:
    """The eight 32-bit words the pool generates for PCG64's seed (ints, or numpy uint64 arrays of
    them: `_pool` and this work on either)."""
    out = []
    for i in range(8):
        v = (mixer[i & 3] ^ _HASH_B[i]) * _HASH_B[i + 1] & _M32
        out.append(v ^ (v >> 16))
    return out


def _pcg_state(out: Sequence[int]) -> tuple[int, int]:
    initstate = (out[0] | out[1] << 32) << 64 | out[2] | out[3] << 32
    initseq = (out[4] | out[5] << 32) << 64 | out[6] | out[7] << 32
    inc = (initseq << 1 | 1) & _M128
    return ((inc + initstate) * _PCG_MULT + inc) & _M128, inc


class RecordRng:
    """``np.random.default_rng(entropy)`` for a list of non-negative ints, as far as ``integers(n)`` goes."""

    __slots__ = ("half", "inc", "state")

    def __init__(self, entropy: list[int]) -> None:
        self.state, self.inc = _pcg_seed(_pool([w for value in entropy for w in _words(value)]))
        self.half: int | None = None

    @classmethod
    def _seeded(cls, state: int, inc: int) -> RecordRng:
        rng = cls.__new__(cls)
        rng.state, rng.inc, rng.half = state, inc, None
        return rng

    def _next32(self) -> int:
        if self.half is not None:
            value, self.half = self.half, None
            return value
        s = self.state = (self.state * _PCG_MULT + self.inc) & _M128
        x = ((s >> 64) ^ s) & _M64
        rot = s >> 122
        out = ((x >> rot) | (x << (64 - rot))) & _M64
        self.half = out >> 32
        return out & _M32

    def integers(self, n: int) -> int:
        """A draw from ``range(n)``, ``0 < n <= 2**32`` (numpy's ``Generator.integers(n)``)."""
        if not 0 < n <= 1 << 32:
            raise ValueError(f"integers(n) needs 0 < n <= 2**32, got {n}")
        if n == 1:
            return 0
        if n == 1 << 32:
            return self._next32()
        m = self._next32() * n
        if m & _M32 < n:
            threshold = ((1 << 32) - n) % n
            while m & _M32 < threshold:
                m = self._next32() * n
        return m >> 32


def record_rng(seed: int, record_id: str) -> RecordRng:
    """The generator of a record's choices: ``np.random.default_rng([seed, zlib.crc32(id)])``'s draws."""
    return RecordRng([seed, zlib.crc32(record_id.encode("utf-8"))])


def record_rngs(seed: int, record_ids: Sequence[str]) -> list[RecordRng]:
    """``[record_rng(seed, id) for id in record_ids]``, the seed mixing of all done together on numpy
    arrays (a third of the cost per record, for a chunk's records)."""
    import numpy as np

    crcs = np.fromiter((zlib.crc32(i.encode("utf-8")) for i in record_ids), np.uint64, len(record_ids))
    words = [np.full(len(record_ids), w, np.uint64) for w in _words(seed)] + [crcs]
    columns = [column.tolist() for column in _state_words(_pool(words))]
    return [RecordRng._seeded(*_pcg_state(out)) for out in zip(*columns, strict=True)]
