"""The token bucket's arithmetic (the Lua script is held to it by an integration test)."""

from __future__ import annotations

from gateway.throttle import Bucket, Decision, take_token


def drain(
    bucket: Bucket | None, now_ms: int, times: int, rate: float, burst: int
) -> tuple[list[bool], Bucket]:
    allowed = []
    for _ in range(times):
        decision, bucket = take_token(bucket, now_ms=now_ms, rate_per_second=rate, burst=burst)
        allowed.append(decision.allowed)
    assert bucket is not None
    return allowed, bucket


def test_a_new_customer_gets_the_whole_burst_then_waits() -> None:
    allowed, bucket = drain(None, 0, 6, rate=2.0, burst=5)
    assert allowed == [True] * 5 + [False]
    decision, _ = take_token(bucket, now_ms=0, rate_per_second=2.0, burst=5)
    assert decision == Decision(False, 0.5)  # one token every half second


def test_tokens_come_back_at_the_rate() -> None:
    _, bucket = drain(None, 0, 5, rate=2.0, burst=5)
    allowed, _ = drain(bucket, 1_000, 3, rate=2.0, burst=5)  # one second: two tokens
    assert allowed == [True, True, False]


def test_the_wait_is_for_the_missing_fraction_only() -> None:
    _, bucket = drain(None, 0, 1, rate=1.0, burst=1)
    decision, _ = take_token(bucket, now_ms=750, rate_per_second=1.0, burst=1)
    assert not decision.allowed
    assert decision.retry_after_seconds == 0.25


def test_an_idle_bucket_refills_no_higher_than_the_burst() -> None:
    _, bucket = drain(None, 0, 3, rate=10.0, burst=3)
    allowed, _ = drain(bucket, 3_600_000, 5, rate=10.0, burst=3)
    assert allowed == [True, True, True, False, False]


def test_a_clock_going_backwards_adds_nothing() -> None:
    _, bucket = drain(None, 10_000, 2, rate=1.0, burst=2)
    allowed, _ = drain(bucket, 5_000, 1, rate=1.0, burst=2)
    assert allowed == [False]


def test_a_refused_request_costs_nothing() -> None:
    _, bucket = drain(None, 0, 1, rate=1.0, burst=1)
    _, bucket = drain(bucket, 500, 10, rate=1.0, burst=1)  # ten refusals at 0.5s
    allowed, _ = drain(bucket, 1_000, 1, rate=1.0, burst=1)
    assert allowed == [True]  # still one token per second, the refusals did not push it back
