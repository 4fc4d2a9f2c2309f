"""The domain series move with what they count: the PSP breaker's gauge follows it open and
closed, a saga step's retries and duration are recorded by state, the gRPC status code is named
whichever form grpc gives it in."""

from __future__ import annotations

import grpc
from prometheus_client import REGISTRY

from marketplace_platform.metrics import _code_name
from services.payment.adapters.psp import CircuitBreaker
from workers.saga_engine.asl.interpreter import Ended, Event, Step
from workers.saga_engine.step_metrics import observe_step


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_the_breaker_gauge_follows_the_breaker() -> None:
    breaker = CircuitBreaker(failures_to_open=2, open_seconds=60)
    breaker.record(healthy=False)
    assert sample("checkout_psp_breaker_open") == 0
    breaker.record(healthy=False)
    assert not breaker.allow()
    assert sample("checkout_psp_breaker_open") == 1
    breaker.record(healthy=True)
    assert sample("checkout_psp_breaker_open") == 0


def test_a_step_records_its_duration_and_retries_by_state() -> None:
    state = "AuthorizePaymentForTest"
    retried = Step(
        Ended("FAILED"),
        (
            Event("TaskFailed", state, {"error": "PspUnavailable"}),
            Event("RetryScheduled", state, {"attempt": 1, "delay_seconds": 1.0}),
        ),
    )
    observe_step(state, retried, 0.2)
    observe_step(state, Step(Ended("SUCCEEDED")), 0.1)
    assert sample("checkout_saga_state_retries_total", state=state) == 1
    assert sample("checkout_saga_state_duration_seconds_count", state=state) == 2
    assert sample("checkout_saga_state_duration_seconds_sum", state=state) == 0.2 + 0.1


def test_status_codes_are_named_from_the_enum_or_its_number() -> None:
    assert _code_name(grpc.StatusCode.NOT_FOUND) == "NOT_FOUND"
    assert _code_name(5) == "NOT_FOUND"
    assert _code_name(None) == "UNKNOWN"
