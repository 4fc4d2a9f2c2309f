"""The PSP simulator's fault dice and windows, on a fake clock: no I/O."""

from __future__ import annotations

import random

from simulators.psp.faults import FaultConfig, FaultInjector, Refusal
from tests.support.clock import ManualClock


def injector(clock: ManualClock, **faults: object) -> FaultInjector:
    return FaultInjector(FaultConfig.model_validate(faults), rng=random.Random(7), clock=clock)


def test_an_outage_refuses_everything_from_when_it_is_set_and_ends_on_its_own() -> None:
    clock = ManualClock()
    faults = injector(clock)
    clock.now += 50  # the window counts from the replacement, not from the start
    faults.replace(FaultConfig(outage_seconds=2, rate_limit_rate=1.0))
    assert faults.plan().refusal is Refusal.OUTAGE  # the outage comes first
    clock.now += 1.9
    assert faults.plan().refusal is Refusal.OUTAGE
    clock.now += 0.2
    assert faults.plan().refusal is Refusal.RATE_LIMIT


def test_a_hanging_outage_holds_each_request_until_it_ends() -> None:
    clock = ManualClock()
    faults = injector(clock, outage_seconds=3, outage_hang=True)
    clock.now += 1
    plan = faults.plan()
    assert (plan.refusal, plan.hang_seconds) == (Refusal.OUTAGE, 2)


def test_a_rate_limit_burst_ends_and_carries_its_retry_after() -> None:
    clock = ManualClock()
    faults = injector(clock, rate_limit_seconds=1, retry_after_seconds=4)
    plan = faults.plan()
    assert (plan.refusal, plan.retry_after_seconds) == (Refusal.RATE_LIMIT, 4)
    clock.now += 1
    assert faults.plan().refusal is None


def test_conflicts_are_injected_at_their_rate_and_described() -> None:
    clock = ManualClock()
    always = injector(clock, conflict_rate=1.0)
    never = injector(clock)
    assert always.plan().describe() == "conflict"
    assert never.plan().refusal is None
