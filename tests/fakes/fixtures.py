"""Pytest fixtures for the fake-board tests.

``tmp_path`` is overridden (by importing ``fast_tmp_path`` into a test module) to live on a
tmpfs when the machine has a writable ``/dev/shm``: every test builds a tree of a few hundred
small files, and on a slow shared disk creating and removing them dominates the run time.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TMP_BASE = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


@pytest.fixture(name="tmp_path")
def fast_tmp_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(dir=TMP_BASE, prefix="dynofa-test-") as d:
        yield Path(d)
