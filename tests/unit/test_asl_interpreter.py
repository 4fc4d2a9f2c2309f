"""The interpreter with a fake task port and a fake clock: no I/O, no real waiting."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workers.saga_engine.asl.errors import InvalidDefinition, StatesError
from workers.saga_engine.asl.interpreter import Ended, Interpreter, Moved, Paused, Position
from workers.saga_engine.asl.machine import StateMachine
from workers.saga_engine.asl.policy import backoff_seconds, decide_retry

EXECUTION = {"Execution": {"Name": "order-1", "Input": {}}}


class FakeInvoker:
    """Tasks as plain functions of their payload; a StatesError plays a failing Lambda."""

    def __init__(self, **functions: Callable[[Any], Any]) -> None:
        self.functions = functions
        self.calls: list[tuple[str, Any, float | None]] = []

    async def invoke(self, resource: str, payload: Any, *, timeout_seconds: float | None) -> Any:
        self.calls.append((resource, payload, timeout_seconds))
        return self.functions[resource](payload)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def machine(states: dict[str, Any], start: str | None = None) -> StateMachine:
    return StateMachine.from_definition({"StartAt": start or next(iter(states)), "States": states})


def interpreter(states: dict[str, Any], invoker: FakeInvoker, clock: FakeClock) -> Interpreter:
    return Interpreter(
        machine(states), invoker, clock=clock, sleep=clock.sleep, uniform=lambda a, b: b / 2
    )


def failing(error: str, times: int, then: Any = None) -> Callable[[Any], Any]:
    left = [times]

    def task(_: Any) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise StatesError(error, f"{error} cause")
        return then

    return task


async def test_task_applies_input_parameters_selector_result_and_output_paths() -> None:
    invoker = FakeInvoker(tax=lambda p: {"amount": p["subtotal"] // 10, "noise": True})
    states = {
        "Tax": {
            "Type": "Task",
            "Resource": "tax",
            "InputPath": "$.order",
            "Parameters": {"subtotal.$": "$.subtotal", "order_id.$": "$$.Execution.Name"},
            "ResultSelector": {"tax.$": "$.amount"},
            "ResultPath": "$.priced",
            "OutputPath": "$.priced",
            "TimeoutSeconds": 7,
            "End": True,
        }
    }
    ended, _ = await interpreter(states, invoker, FakeClock()).run(
        {"order": {"subtotal": 1000}, "other": 1}, EXECUTION
    )
    assert invoker.calls == [("tax", {"subtotal": 1000, "order_id": "order-1"}, 7.0)]
    assert ended == Ended("SUCCEEDED", output={"tax": 100})


async def test_pass_result_path_and_null_paths() -> None:
    states = {
        "Tag": {"Type": "Pass", "Result": {"v": 1}, "ResultPath": "$.tag", "Next": "Drop"},
        "Drop": {"Type": "Pass", "Result": "ignored", "ResultPath": None, "Next": "Empty"},
        "Empty": {"Type": "Pass", "InputPath": None, "ResultPath": "$.kept", "Next": "Done"},
        "Done": {"Type": "Succeed"},
    }
    ended, events = await interpreter(states, FakeInvoker(), FakeClock()).run({"a": 1}, EXECUTION)
    assert ended.output == {"a": 1, "tag": {"v": 1}, "kept": {}}
    kinds = [event.type for event in events]
    assert kinds[:3] == ["PassStateEntered", "PassStateExited", "PassStateEntered"]


async def test_choice_routes_and_fail_ends_with_its_error() -> None:
    states = {
        "Route": {
            "Type": "Choice",
            "Choices": [{"Variable": "$.risk", "StringEquals": "high", "Next": "Reject"}],
            "Default": "Accept",
        },
        "Accept": {"Type": "Succeed"},
        "Reject": {"Type": "Fail", "Error": "FraudRejected", "Cause": "risk too high"},
    }
    run = interpreter(states, FakeInvoker(), FakeClock())
    assert (await run.run({"risk": "low"}, EXECUTION))[0] == Ended("SUCCEEDED", {"risk": "low"})
    assert (await run.run({"risk": "high"}, EXECUTION))[0] == Ended(
        "FAILED", error="FraudRejected", cause="risk too high"
    )


async def test_choice_without_match_or_default_fails_the_execution() -> None:
    states = {
        "Route": {"Type": "Choice", "Choices": [{"Variable": "$.x", "IsNull": True, "Next": "E"}]},
        "E": {"Type": "Succeed"},
    }
    ended, _ = await interpreter(states, FakeInvoker(), FakeClock()).run({"x": 1}, EXECUTION)
    assert ended.error == "States.NoChoiceMatched"


async def test_parallel_outputs_branch_results_in_order() -> None:
    invoker = FakeInvoker(tax=lambda p: {"tax": 80}, fraud=lambda p: {"risk": "low"})
    states = {
        "Both": {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "tax", "End": True}}},
                {
                    "StartAt": "F",
                    "States": {"F": {"Type": "Task", "Resource": "fraud", "End": True}},
                },
            ],
            "ResultSelector": {"tax.$": "$[0].tax", "risk.$": "$[1].risk"},
            "ResultPath": "$.checks",
            "End": True,
        }
    }
    ended, events = await interpreter(states, invoker, FakeClock()).run({"id": 1}, EXECUTION)
    assert ended.output == {"id": 1, "checks": {"tax": 80, "risk": "low"}}
    assert {e.state for e in events if e.type == "TaskSucceeded"} == {"Both/0/T", "Both/1/F"}


async def test_a_failed_branch_fails_the_parallel_state_which_can_catch_it() -> None:
    invoker = FakeInvoker(ok=lambda p: 1, bad=failing("OutOfStock", 99))
    states = {
        "Both": {
            "Type": "Parallel",
            "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "ok", "End": True}}},
                {"StartAt": "B", "States": {"B": {"Type": "Task", "Resource": "bad", "End": True}}},
            ],
            "Catch": [{"ErrorEquals": ["OutOfStock"], "ResultPath": "$.error", "Next": "Undo"}],
            "End": True,
        },
        "Undo": {"Type": "Pass", "End": True},
    }
    ended, _ = await interpreter(states, invoker, FakeClock()).run({"id": 1}, EXECUTION)
    assert ended.output == {"id": 1, "error": {"Error": "OutOfStock", "Cause": "OutOfStock cause"}}


def test_backoff_grows_by_the_rate_and_stops_at_the_cap() -> None:
    retrier = {"IntervalSeconds": 2, "BackoffRate": 3, "MaxDelaySeconds": 30}
    delays = [backoff_seconds(retrier, done, lambda a, b: b) for done in range(5)]
    assert delays == [2, 6, 18, 30, 30]
    jittered = backoff_seconds({**retrier, "JitterStrategy": "FULL"}, 2, lambda a, b: (a, b)[1] / 4)
    assert jittered == 4.5


def test_retry_uses_the_first_matching_retrier_until_its_attempts_run_out() -> None:
    retriers = [
        {"ErrorEquals": ["RetryableError"], "MaxAttempts": 2},
        {"ErrorEquals": ["States.ALL"], "MaxAttempts": 1},
    ]
    assert decide_retry(retriers, "RetryableError", (0,)).index == 0  # type: ignore[union-attr]
    assert decide_retry(retriers, "RetryableError", (2,)) is None
    assert decide_retry(retriers, "Other", (2, 0)).index == 1  # type: ignore[union-attr]
    assert decide_retry(retriers, "States.Runtime", ()) is None
    assert decide_retry([{"ErrorEquals": ["States.TaskFailed"]}], "States.Timeout", ()) is None


async def test_retries_back_off_then_succeed() -> None:
    clock = FakeClock()
    invoker = FakeInvoker(pay=failing("RetryableError", 2, then={"ok": True}))
    states = {
        "Pay": {
            "Type": "Task",
            "Resource": "pay",
            "Retry": [{"ErrorEquals": ["States.TaskFailed"], "IntervalSeconds": 1}],
            "End": True,
        }
    }
    ended, events = await interpreter(states, invoker, clock).run({}, EXECUTION)
    assert ended == Ended("SUCCEEDED", {"ok": True})
    assert clock.slept == [1.0, 2.0]
    retries = [e.payload["attempt"] for e in events if e.type == "RetryScheduled"]
    assert retries == [1, 2]


async def test_exhausted_retries_fall_to_catch_with_the_error_output() -> None:
    clock = FakeClock()
    invoker = FakeInvoker(pay=failing("PaymentDeclined", 99))
    states = {
        "Pay": {
            "Type": "Task",
            "Resource": "pay",
            "Retry": [{"ErrorEquals": ["PaymentDeclined"], "MaxAttempts": 1}],
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.failure", "Next": "Fail"}],
            "End": True,
        },
        "Fail": {"Type": "Pass", "End": True},
    }
    ended, _ = await interpreter(states, invoker, clock).run({"order_id": "o"}, EXECUTION)
    assert len(invoker.calls) == 2
    assert ended.output == {
        "order_id": "o",
        "failure": {"Error": "PaymentDeclined", "Cause": "PaymentDeclined cause"},
    }


async def test_an_uncaught_task_error_fails_the_execution_and_timeout_is_not_task_failed() -> None:
    invoker = FakeInvoker(slow=failing("States.Timeout", 1))
    states = {
        "Slow": {
            "Type": "Task",
            "Resource": "slow",
            "Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "Never"}],
            "End": True,
        },
        "Never": {"Type": "Succeed"},
    }
    ended, _ = await interpreter(states, invoker, FakeClock()).run({}, EXECUTION)
    assert ended == Ended("FAILED", error="States.Timeout", cause="States.Timeout cause")


async def test_wait_pauses_until_its_time_and_then_moves_on() -> None:
    clock = FakeClock()
    states = {
        "Hold": {"Type": "Wait", "SecondsPath": "$.delay", "Next": "Until"},
        "Until": {"Type": "Wait", "Timestamp": "2026-01-01T00:01:00Z", "Next": "Done"},
        "Done": {"Type": "Succeed"},
    }
    run = interpreter(states, FakeInvoker(), clock)
    start, _ = run.start({"delay": 5})
    step = await run.step(start, EXECUTION)
    assert isinstance(step.outcome, Paused)
    assert step.outcome.until == clock.now + timedelta(seconds=5)
    again = await run.step(step.outcome.position, EXECUTION)
    assert again.outcome == step.outcome  # not yet due: still paused, nothing recorded
    assert again.events == ()
    clock.now += timedelta(seconds=5)
    assert isinstance((await run.step(step.outcome.position, EXECUTION)).outcome, Moved)
    ended, _ = await run.run({"delay": 5}, EXECUTION)
    assert ended.status == "SUCCEEDED"
    assert clock.slept[-1] == 50.0  # 00:00:10 -> 00:01:00


def test_a_position_survives_its_storage_round_trip() -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    position = Position("Pay", {"a": 1}, moment, retries=(0, 2), wait_until=moment)
    assert Position.restore("Pay", {"a": 1}, moment, position.memo()) == position


@pytest.mark.parametrize(
    "states",
    [
        {"A": {"Type": "Pass", "Next": "Nowhere"}},
        {"A": {"Type": "Pass"}},
        {"A": {"Type": "Map", "End": True}},
        {"A": {"Type": "Task", "End": True}},
    ],
)
def test_bad_definitions_are_refused_at_load(states: dict[str, Any]) -> None:
    with pytest.raises(InvalidDefinition):
        machine(states)
