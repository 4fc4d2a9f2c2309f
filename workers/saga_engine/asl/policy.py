"""Retry and Catch: which retrier or catcher handles an error, and how long to back off."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workers.saga_engine.asl.errors import matches

DEFAULT_INTERVAL_SECONDS = 1.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_RATE = 2.0


@dataclass(frozen=True)
class RetryDecision:
    """Retry with retrier `index` after `delay_seconds`; `attempt` counts retries, from 1."""

    index: int
    attempt: int
    delay_seconds: float


def backoff_seconds(
    retrier: Mapping[str, Any], retries_done: int, uniform: Callable[[float, float], float]
) -> float:
    """The delay before retry number `retries_done + 1` under one retrier's settings."""
    interval = float(retrier.get("IntervalSeconds", DEFAULT_INTERVAL_SECONDS))
    rate = float(retrier.get("BackoffRate", DEFAULT_BACKOFF_RATE))
    delay = interval * rate**retries_done
    cap = retrier.get("MaxDelaySeconds")
    if cap is not None:
        delay = min(delay, float(cap))
    if retrier.get("JitterStrategy") == "FULL":
        delay = uniform(0.0, delay)
    return delay


def decide_retry(
    retriers: Sequence[Mapping[str, Any]],
    error: str,
    retries_done: Sequence[int],
    uniform: Callable[[float, float], float] = random.uniform,
) -> RetryDecision | None:
    """The retry to make for `error`, or None when the first matching retrier is used up."""
    for index, retrier in enumerate(retriers):
        if not matches(list(retrier["ErrorEquals"]), error):
            continue
        done = retries_done[index] if index < len(retries_done) else 0
        if done >= int(retrier.get("MaxAttempts", DEFAULT_MAX_ATTEMPTS)):
            return None
        return RetryDecision(index, done + 1, backoff_seconds(retrier, done, uniform))
    return None


def find_catcher(catchers: Sequence[Mapping[str, Any]], error: str) -> Mapping[str, Any] | None:
    """The first Catch entry whose ErrorEquals covers `error`."""
    for catcher in catchers:
        if matches(list(catcher["ErrorEquals"]), error):
            return catcher
    return None
