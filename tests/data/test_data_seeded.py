"""A record's choices: the pure-Python generator draws what numpy's default_rng([seed, crc32(id)]) draws."""

from __future__ import annotations

import random
import zlib

import numpy as np
import pytest

from text4seg.data.seeded import RecordRng, record_rng


def test_draws_equal_numpys_for_many_seeds_ids_and_ranges():
    choose = random.Random(3)
    seeds = [0, 1, 7, 2**31, 2**32, 2**40 + 5, 2**100 + 3, 2**200 + 1]
    compared = 0
    for k in range(3000):
        seed = seeds[k % len(seeds)] if k % 3 else choose.getrandbits(32)
        record_id = f"refcoco/train/ref{k}/sent{choose.getrandbits(20)}"
        ours = record_rng(seed, record_id)
        theirs = np.random.default_rng([seed, zlib.crc32(record_id.encode("utf-8"))])
        for n in (
            choose.randint(1, 12),
            choose.randint(1, 12),
            1,
            2,
            3,
            2**31 + 11,
            2**32,
            choose.randint(1, 100),
        ):
            assert ours.integers(n) == int(theirs.integers(n)), (seed, record_id, n)
            compared += 1
    assert compared == 24000


def test_a_zero_crc_and_a_single_value_seed_like_numpy():
    for entropy in ([0, 0], [5], [2**64, 0, 3, 9, 11]):
        ours, theirs = RecordRng(entropy), np.random.default_rng(entropy)
        assert [ours.integers(6) for _ in range(9)] == [int(theirs.integers(6)) for _ in range(9)]


@pytest.mark.parametrize("bad", [[-1, 3]])
def test_a_negative_seed_is_refused_as_numpy_does(bad):
    with pytest.raises(ValueError, match="non-negative"):
        np.random.default_rng(bad)
    with pytest.raises(ValueError, match="non-negative"):
        RecordRng(bad)


def test_out_of_range_draws_are_refused():
    with pytest.raises(ValueError, match="0 < n"):
        record_rng(0, "x").integers(0)


@pytest.mark.parametrize("seed", [0, 1, 2**32 + 7, 2**100 + 3])
def test_generators_seeded_together_equal_those_seeded_one_by_one(seed):
    from text4seg.data.seeded import record_rngs

    ids = [f"refcoco/val/ref{k}/sent{k * 31}" for k in range(300)] + ["", "é/中"]
    together = record_rngs(seed, ids)
    alone = [record_rng(seed, record_id) for record_id in ids]
    assert [(r.state, r.inc) for r in together] == [(r.state, r.inc) for r in alone]
    assert [r.integers(9) for r in together] == [r.integers(9) for r in alone]
    assert record_rngs(seed, []) == []
