"""A monotonic clock a test moves by hand, for code that takes a `clock` callable: a TTL, an
outage or a rate passes without sleeping."""

from __future__ import annotations


class ManualClock:
    """Returns `now`, which only the test changes."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now
