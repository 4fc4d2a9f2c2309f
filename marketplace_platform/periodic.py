"""The one background loop every process has: do a duty every N seconds, log its failures.

A failed round (PostgreSQL gone for a moment, a peer not answering) is logged with its
traceback and tried again next round; the loop itself only ends when its task is cancelled.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)

BackgroundLoop = Callable[[], Coroutine[Any, Any, None]]


def every(
    interval: float | Callable[[], float],
    name: str,
    duty: Callable[[], Awaitable[object]],
    *,
    first_at_once: bool = False,
) -> BackgroundLoop:
    """A loop running `duty` every `interval` seconds (a callable: asked before each sleep),
    after a first sleep unless `first_at_once`."""

    def pause() -> float:
        return interval() if callable(interval) else interval

    async def loop() -> None:
        if not first_at_once:
            await asyncio.sleep(pause())
        while True:
            try:
                await duty()
            except Exception:
                log.exception("%s failed; retrying in %.1fs", name, pause())
            await asyncio.sleep(pause())

    return loop
