"""Fixtures for end-to-end tests: the whole local stack as real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.stack import LaunchedStack, running_stack


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[LaunchedStack]:
    """A stack of the test's own (a module whose tests share one overrides this)."""
    async with running_stack(database_url, tmp_path) as running:
        yield running
