"""Shared fixtures for the training tests (tiny models; records made by the real builder)."""

from __future__ import annotations

import os

import pytest
from support.records import record_list

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def records() -> list[dict]:
    """Six referring records as `text4seg build refcoco` makes them (8×8 grid, 32 px images: the tiny
    models' size; `support.records`)."""
    return record_list(6)
