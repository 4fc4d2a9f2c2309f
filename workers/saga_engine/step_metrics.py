"""Saga state metrics: how long each state's run took and how often a state is retried
(checkout_saga_state_duration_seconds, checkout_saga_state_retries_total)."""

from __future__ import annotations

from marketplace_platform.metrics import SAGA_STATE_LATENCY, SAGA_STATE_RETRIES
from workers.saga_engine.asl.interpreter import Step


def observe_step(state: str, step: Step, seconds: float) -> None:
    """Record one run of `state`: its duration and any retry it scheduled."""
    SAGA_STATE_LATENCY.labels(state).observe(seconds)
    retries = sum(1 for event in step.events if event.type == "RetryScheduled")
    if retries:
        SAGA_STATE_RETRIES.labels(state).inc(retries)
