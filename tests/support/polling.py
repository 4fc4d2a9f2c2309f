"""Waiting in tests: poll a condition until it holds, failing the test at a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any


async def eventually(
    check: Callable[[], Any],
    *,
    what: str = "the condition holds",
    within: float = 10.0,
    interval: float = 0.02,
) -> Any:
    """Call `check` (sync or async) until it answers something truthy and return that answer;
    fail the test if it has not within `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        answer = check()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g}s: {what}")
        await asyncio.sleep(interval)


async def until_equal(
    probe: Callable[[], Any], expected: Any, *, within: float = 10.0, interval: float = 0.02
) -> None:
    """Poll the async `probe()` until it returns `expected`, failing after `within` seconds."""
    deadline = time.monotonic() + within
    while (seen := await probe()) != expected:
        assert time.monotonic() < deadline, f"still {seen!r}, not {expected!r}"
        await asyncio.sleep(interval)
