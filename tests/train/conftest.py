"""Shared fixtures for the training tests (tiny models, records made in the RECORDS.md schema)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from train_records import make_records  # noqa: E402


@pytest.fixture(scope="session")
def records() -> list[dict]:
    return make_records(6)
