"""The checkout saga's state machine (deploy/ecs/checkout_saga.asl.json) held to its promises:
every Task has a handler, every named error is retried or caught where it can occur, every
state can end, compensations retry until parked, nothing cancels an order without voiding its
payment and releasing its stock first, and no order is confirmed before its stock is sold."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from saga_tasks import errors, reasons
from saga_tasks.registry import HANDLERS, RAISES, REQUIRES
from saga_tasks.settings import AdapterSettings
from workers.saga_engine.asl.errors import StatesError
from workers.saga_engine.asl.interpreter import Ended, Interpreter
from workers.saga_engine.asl.machine import StateMachine

REPO = Path(__file__).resolve().parents[2]
DEFINITION = REPO / "deploy" / "ecs" / "checkout_saga.asl.json"
VALIDATOR = REPO / "node_modules" / ".bin" / "asl-validator"

State = dict[str, Any]

AUTHORIZE = "AuthorizePayment"
PIVOT = "ConfirmOrder"
BOUNDED = ("CalculateTax", "FraudCheck", "ReserveInventory", "CommitReservation")
BEFORE_PIVOT = ("CalculateTax", "FraudCheck", "ReserveInventory", AUTHORIZE, "CommitReservation")
AFTER_PIVOT = (PIVOT,)
COMPENSATIONS = ("VoidPayment", "ReleaseInventory", "FailOrder")
OVERALL_TIMEOUT = 600

# A business outcome and the failure reason the order must end CANCELLED with.
REASON_BY_OUTCOME = {
    "OutOfStock": "out_of_stock",
    "PaymentDeclined": "payment_declined",
    "FraudRejected": "fraud_rejected",
    "OrderCancelRequested": "customer_cancelled",
}
# Errors that must be routed by name and never retried (an expired hold at the commit
# compensates at once; retrying cannot bring it back).
ROUTED = {*REASON_BY_OUTCOME, "ReservationExpired"}


@cache
def definition() -> dict[str, Any]:
    return json.loads(DEFINITION.read_text())  # type: ignore[no-any-return]


def all_states(machine: dict[str, Any] | None = None) -> Iterator[tuple[str, State, str | None]]:
    """Every state as (name, state, name of the Parallel it is a branch of, or None)."""
    machine = machine or definition()
    for name, state in machine["States"].items():
        yield name, state, None
        for branch in state.get("Branches", []):
            for inner, inner_state, _ in all_states(branch):
                yield inner, inner_state, name


def states() -> dict[str, State]:
    return {name: state for name, state, _ in all_states()}


def top_level() -> dict[str, State]:
    return definition()["States"]  # type: ignore[no-any-return]


def resource_name(state: State) -> str:
    resource: str = state["Resource"]
    assert resource.startswith("${"), resource
    assert resource.endswith("}"), resource
    return resource[2:-1]


def tasks() -> dict[str, State]:
    return {name: state for name, state in states().items() if state["Type"] == "Task"}


def first_match(rules: list[dict[str, Any]], error: str) -> dict[str, Any] | None:
    """The retrier or catcher Step Functions picks for `error`: the first that names it."""
    for rule in rules:
        if error in rule["ErrorEquals"] or "States.ALL" in rule["ErrorEquals"]:
            return rule
    return None


def handling(task: str, error: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(retrier, catcher) for `error` raised by `task`: its own, else its Parallel's."""
    enclosing = {name: parallel for name, _, parallel in all_states()}
    chain = [states()[task]]
    parallel = enclosing[task]
    if parallel is not None:
        chain.append(top_level()[parallel])
    retrier = None
    for state in chain:
        # Once a state's retries are spent the error goes to its catchers, else outwards.
        retrier = retrier or first_match(state.get("Retry", []), error)
        catcher = first_match(state.get("Catch", []), error)
        if catcher is not None:
            return retrier, catcher
    return retrier, None


def successors(state: State) -> list[str]:
    nexts = [state["Next"]] if "Next" in state else []
    nexts += [c["Next"] for c in state.get("Catch", [])]
    nexts += [c["Next"] for c in state.get("Choices", [])]
    if "Default" in state:
        nexts.append(state["Default"])
    return nexts


def is_terminal(state: State) -> bool:
    return state["Type"] in ("Succeed", "Fail") or state.get("End") is True


def reachable(
    machine: dict[str, Any], start: str, avoiding: frozenset[str] = frozenset()
) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen or name in avoiding:
            continue
        seen.add(name)
        todo.extend(successors(machine["States"][name]))
    return seen


def test_every_task_resource_has_a_handler_and_every_handler_is_used() -> None:
    used = {resource_name(state) for state in tasks().values()}

    assert used <= set(HANDLERS), used - set(HANDLERS)
    assert set(HANDLERS) <= used, set(HANDLERS) - used
    assert all(callable(handler) for handler in HANDLERS.values())


def test_each_task_passes_its_handler_every_field_it_reads() -> None:
    for name, state in tasks().items():
        given = {key.removesuffix(".$") for key in state["Parameters"]}
        missing = REQUIRES[resource_name(state)] - given
        assert not missing, f"{name} does not pass {missing}"


def test_the_named_errors_are_the_exceptions_the_handlers_raise() -> None:
    for raised in RAISES.values():
        for name in raised:
            cls = getattr(errors, name)
            assert issubclass(cls, errors.SagaStepError)
            assert cls.__name__ == name  # the class name is the Step Functions error name


def test_every_named_error_is_retried_or_caught_where_it_can_occur() -> None:
    for task, state in tasks().items():
        for error in RAISES[resource_name(state)]:
            retrier, catcher = handling(task, error)
            if error in ROUTED:
                assert catcher is not None, (task, error)
                assert error in catcher["ErrorEquals"], (task, error)
                assert retrier is None or retrier["MaxAttempts"] == 0, (task, error)
            elif error == "RetryableError":
                assert retrier is not None, (task, error)
                assert retrier["MaxAttempts"] > 0, (task, error)
                assert catcher is not None, f"{task}: RetryableError after its retries"
            else:
                assert catcher is not None, (task, error)


def test_business_outcomes_end_the_order_with_their_reason() -> None:
    for task, state in tasks().items():
        for error in RAISES[resource_name(state)] & set(REASON_BY_OUTCOME):
            _, catcher = handling(task, error)
            assert catcher is not None
            target = top_level()[catcher["Next"]]
            assert target["Type"] == "Pass"
            assert target["Parameters"]["reason"] == REASON_BY_OUTCOME[error], (task, error)
            assert target["ResultPath"] == "$.failure"


def test_any_other_failure_before_the_pivot_cancels_with_timeout() -> None:
    for name in ("CheckOrder", "ReserveInventory", AUTHORIZE, "CommitReservation"):
        catchers = top_level()[name]["Catch"]
        assert catchers[-1]["ErrorEquals"] == ["States.ALL"]
        assert top_level()[catchers[-1]["Next"]]["Parameters"]["reason"] == "timeout"


def test_every_failure_reason_the_definition_sets_is_known_to_every_service() -> None:
    set_reasons = {
        state["Parameters"]["reason"]
        for state in top_level().values()
        if state["Type"] == "Pass" and "reason" in state.get("Parameters", {})
    }

    assert set_reasons == reasons.FAILURE_REASONS
    for reason in set_reasons:
        reasons.release_reason(reason)
        reasons.void_reason(reason)
        reasons.failure_reason(reason)


def test_every_state_is_reachable_and_can_reach_an_end() -> None:
    machines = [definition()] + [
        branch for state in top_level().values() for branch in state.get("Branches", [])
    ]
    for machine in machines:
        names = set(machine["States"])
        assert reachable(machine, machine["StartAt"]) == names
        for name in names:
            ends = [n for n in reachable(machine, name) if is_terminal(machine["States"][n])]
            assert ends, f"{name} never reaches an end"


def succeeds(names: set[str]) -> bool:
    return any(top_level()[n]["Type"] == "Succeed" for n in names)


def test_nothing_fails_the_order_without_voiding_and_releasing_first() -> None:
    for start in (AUTHORIZE, "CommitReservation", PIVOT):
        assert "FailOrder" in reachable(definition(), start)
        assert "FailOrder" not in reachable(definition(), start, frozenset({"VoidPayment"}))
        assert "FailOrder" not in reachable(definition(), start, frozenset({"ReleaseInventory"}))
    # and nothing succeeds without selling the stock and confirming the order
    assert not succeeds(reachable(definition(), AUTHORIZE, frozenset({"CommitReservation"})))
    assert not succeeds(reachable(definition(), AUTHORIZE, frozenset({PIVOT})))


def test_the_stock_is_sold_before_confirm_and_nothing_compensates_after_it() -> None:
    machine = definition()
    assert top_level()[AUTHORIZE]["Next"] == "CommitReservation"
    assert top_level()["CommitReservation"]["Next"] == PIVOT
    assert top_level()[PIVOT]["Next"] == "OrderConfirmed"
    # A CONFIRMED order never rests on a hold the sweeper could expire.
    assert "OrderConfirmed" not in reachable(
        machine, machine["StartAt"], frozenset({"CommitReservation"})
    )
    # The compensation after a commit (a cancel seen at confirm) releases: sold units return.
    assert "ReleaseInventory" in reachable(machine, "CommitReservation")
    # A confirmation that keeps failing may have happened: it parks, it never compensates.
    _, catcher = handling(PIVOT, "StepFailed")
    assert catcher is not None
    assert top_level()[catcher["Next"]] == top_level()[catcher["Next"]] | {
        "Type": "Fail", "Error": "ConfirmationParked",
    }  # fmt: skip


def test_a_reservation_lost_before_confirm_compensates_as_a_timeout_without_retrying() -> None:
    retrier, catcher = handling("CommitReservation", "ReservationExpired")

    assert retrier is not None
    assert retrier["MaxAttempts"] == 0
    assert catcher is not None
    assert top_level()[catcher["Next"]]["Parameters"]["reason"] == "timeout"


def test_compensations_retry_with_backoff_and_are_parked_not_dropped() -> None:
    for name in COMPENSATIONS:
        state = top_level()[name]
        retrier = first_match(state["Retry"], "RetryableError")
        assert retrier is not None
        assert retrier["ErrorEquals"] == ["States.ALL"]
        assert retrier["MaxAttempts"] >= 10
        assert retrier["BackoffRate"] >= 2
        assert retrier["MaxDelaySeconds"] > 0
        assert retrier["JitterStrategy"] == "FULL"
        catcher = first_match(state["Catch"], "StepFailed")
        assert catcher is not None
        parked = top_level()[catcher["Next"]]
        assert parked == parked | {"Type": "Fail", "Error": "CompensationParked"}


def mean_delays(retrier: dict[str, Any]) -> float:
    """The expected total backoff of every retry under full jitter."""
    return worst_delays(retrier) / 2


def test_retries_are_bounded_before_the_pivot_and_large_after_it() -> None:
    for name in BOUNDED:
        retrier = first_match(states()[name]["Retry"], "RetryableError")
        assert retrier is not None, name
        assert 1 <= retrier["MaxAttempts"] <= 6, name
        assert retrier["BackoffRate"] == 2
        assert retrier["JitterStrategy"] == "FULL"
        assert retrier["MaxDelaySeconds"] > 0
    # Authorization is bounded by its budget, not its attempts: the attempts last well past it.
    retrier = first_match(top_level()[AUTHORIZE]["Retry"], "RetryableError")
    assert retrier is not None
    assert mean_delays(retrier) >= 1.5 * AdapterSettings().authorization_budget_seconds
    assert top_level()[AUTHORIZE]["Parameters"]["saga_started_at.$"] == "$$.Execution.StartTime"
    for name in AFTER_PIVOT:
        state = top_level()[name]
        retrier = first_match(state["Retry"], "RetryableError")
        assert retrier is not None, name
        assert retrier["MaxAttempts"] >= 10, name
        assert retrier["JitterStrategy"] == "FULL"
        catcher = first_match(state["Catch"], "StepFailed")
        assert catcher is not None, name
        parked = top_level()[catcher["Next"]]
        assert parked == parked | {"Type": "Fail", "Error": "ConfirmationParked"}


def test_timeouts_each_task_outlasts_its_call_deadline_and_the_hold_outlasts_the_saga() -> None:
    settings = AdapterSettings()
    assert definition()["TimeoutSeconds"] == OVERALL_TIMEOUT
    for name, state in tasks().items():
        payment = resource_name(state) in {"AuthorizePaymentFunctionArn", "VoidPaymentFunctionArn"}
        deadline = (
            settings.payment_call_timeout_seconds if payment else settings.call_timeout_seconds
        )
        assert state["TimeoutSeconds"] > deadline, name
    assert settings.reservation_ttl_seconds > OVERALL_TIMEOUT


def worst_delays(retrier: dict[str, Any]) -> float:
    delay, total = float(retrier["IntervalSeconds"]), 0.0
    for _ in range(retrier["MaxAttempts"]):
        total += min(delay, retrier["MaxDelaySeconds"])
        delay *= retrier["BackoffRate"]
    return total


def worst_case_seconds(state: State) -> float:
    """Every attempt running to its TimeoutSeconds, every backoff at its cap."""
    if state["Type"] == "Parallel":
        return max(
            sum(worst_case_seconds(s) for s in branch["States"].values())
            for branch in state["Branches"]
        )
    retrier = first_match(state["Retry"], "RetryableError")
    assert retrier is not None
    attempts = retrier["MaxAttempts"] + 1
    if "saga_started_at.$" in state.get("Parameters", {}):
        # Bounded by the authorization budget: the attempt running when it is spent, then out.
        budget = AdapterSettings().authorization_budget_seconds
        return float(budget + retrier["MaxDelaySeconds"] + state["TimeoutSeconds"])
    return float(attempts * state["TimeoutSeconds"]) + worst_delays(retrier)


def test_a_compensation_is_parked_before_the_overall_timeout_cuts_the_execution() -> None:
    # The machine's TimeoutSeconds ends an execution without running any Catch, so the
    # bounded steps before the pivot plus one compensation's retry schedule must fit inside it
    # (a compensation against a service that is down fails fast: its backoff is what counts).
    before_pivot = sum(
        worst_case_seconds(top_level()[n]) for n in ("CheckOrder", *BEFORE_PIVOT[2:])
    )
    for name in COMPENSATIONS:
        retrier = first_match(top_level()[name]["Retry"], "RetryableError")
        assert retrier is not None
        assert before_pivot + worst_delays(retrier) < OVERALL_TIMEOUT, name


@pytest.mark.skipif(not VALIDATOR.exists(), reason="node_modules not installed (npm ci)")
def test_asl_validator_accepts_the_definition() -> None:
    assert shutil.which("node"), "asl-validator needs node"
    result = subprocess.run(
        [str(VALIDATOR), "--json-path", str(DEFINITION)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the definition executed by the local saga engine's interpreter, tasks scripted ---------

ORDER_ID = "0193a5b0-0000-7000-8000-000000000001"
SAGA_INPUT = {
    "order_id": ORDER_ID,
    "customer_id": "customer-1",
    "payment_method": "pm_card_visa",
    "lines": [{"sku": "MUG-1", "quantity": 2}],
    "subtotal": {"amount_minor": 1000, "currency": "USD"},
}
ANSWERS: dict[str, Any] = {
    "CalculateTax": {
        "tax": {"amount_minor": 80, "currency": "USD"},
        "total": {"amount_minor": 1080, "currency": "USD"},
    },
    "FraudCheck": {"decision": "APPROVE", "risk_score": 10},
    "ReserveInventory": {"reservation_id": "r-1", "status": "ACTIVE", "expires_at": "later"},
    "AuthorizePayment": {"payment_id": "p-1", "status": "AUTHORIZED"},
    "CommitReservation": {"reservation_id": "r-1", "status": "COMMITTED"},
    "ConfirmOrder": {"order_id": ORDER_ID, "status": "CONFIRMED"},
    "VoidPayment": {"status": "VOIDED"},
    "ReleaseInventory": {"status": "RELEASED"},
    "FailOrder": {"status": "CANCELLED"},
}


class ScriptedTasks:
    """The engine's task port: each step answers as scripted (an error name fails it, for the
    first `times` calls or always), and every call is recorded with its payload."""

    def __init__(self, failures: Mapping[str, tuple[str, int | None]]) -> None:
        self.failures = dict(failures)
        self.calls: list[tuple[str, Any]] = []

    async def invoke(self, resource: str, payload: Any, *, timeout_seconds: float | None) -> Any:
        step = resource.removeprefix("${").removesuffix("FunctionArn}")
        self.calls.append((step, payload))
        error, times = self.failures.get(step, ("", 0))
        if error and (times is None or self.count(step) <= times):
            raise StatesError(error, f"{step} scripted to fail")
        return ANSWERS[step]

    def count(self, step: str) -> int:
        return sum(1 for called, _ in self.calls if called == step)

    def steps(self) -> list[str]:
        return [step for step, _ in self.calls]

    def payload(self, step: str) -> Any:
        return next(payload for called, payload in self.calls if called == step)


async def execute(**failures: tuple[str, int | None]) -> tuple[Ended, ScriptedTasks]:
    """Run the definition to its end on a simulated clock (back-offs take no real time)."""
    now = [datetime(2026, 1, 1, tzinfo=UTC)]

    async def sleep(seconds: float) -> None:
        now[0] += timedelta(seconds=seconds)

    tasks = ScriptedTasks(failures)
    interpreter = Interpreter(
        StateMachine.from_definition(definition()), tasks, clock=lambda: now[0], sleep=sleep
    )
    context = {"Execution": {"Name": ORDER_ID, "StartTime": "2026-01-01T00:00:00.000Z"}}
    ended, _ = await interpreter.run(dict(SAGA_INPUT), context)
    return ended, tasks


async def test_the_happy_path_confirms_the_order_and_compensates_nothing() -> None:
    ended, tasks = await execute()

    assert ended.status == "SUCCEEDED"
    assert sorted(tasks.steps()[:2]) == ["CalculateTax", "FraudCheck"]
    assert tasks.steps()[2:] == [
        "ReserveInventory", "AuthorizePayment", "CommitReservation", "ConfirmOrder",
    ]  # fmt: skip
    assert tasks.payload("AuthorizePayment")["amount"] == ANSWERS["CalculateTax"]["total"]
    assert tasks.payload("ConfirmOrder") == {
        "order_id": ORDER_ID, "reservation_id": "r-1", "payment_id": "p-1",
    }  # fmt: skip


COMPENSATION = ["VoidPayment", "ReleaseInventory", "FailOrder"]


@pytest.mark.parametrize(
    ("step", "error", "reason", "before"),
    [
        ("FraudCheck", "FraudRejected", "fraud_rejected", []),
        ("ReserveInventory", "OutOfStock", "out_of_stock", ["ReserveInventory"]),
        ("ReserveInventory", "StepFailed", "timeout", ["ReserveInventory"]),
        ("AuthorizePayment", "PaymentDeclined", "payment_declined", ["AuthorizePayment"]),
        ("ConfirmOrder", "OrderCancelRequested", "customer_cancelled", ["ConfirmOrder"]),
    ],
)
async def test_a_business_failure_compensates_in_reverse_and_cancels_with_its_reason(
    step: str, error: str, reason: str, before: list[str]
) -> None:
    ended, tasks = await execute(**{step: (error, None)})

    assert tasks.count(step) == 1  # never retried
    assert tasks.steps()[-len(COMPENSATION) - len(before) :] == before + COMPENSATION
    fail = tasks.payload("FailOrder")
    assert (fail["reason"], fail["error"]["Error"]) == (reason, error)
    assert tasks.payload("VoidPayment") == {"order_id": ORDER_ID, "reason": reason}
    assert (ended.status, ended.error, ended.cause) == ("FAILED", "OrderCancelled", reason)


async def test_retryable_errors_before_the_pivot_are_retried_then_cancel_with_timeout() -> None:
    once, tasks = await execute(ReserveInventory=("RetryableError", 2))
    assert once.status == "SUCCEEDED"
    assert tasks.count("ReserveInventory") == 3

    ended, tasks = await execute(CommitReservation=("RetryableError", None))
    assert tasks.count("CommitReservation") == 7
    assert PIVOT not in tasks.steps()
    assert tasks.steps()[-3:] == COMPENSATION
    assert (ended.error, ended.cause) == ("OrderCancelled", "timeout")


async def test_authorization_retries_until_its_budget_is_spent_then_cancels_as_timeout() -> None:
    retried, tasks = await execute(AuthorizePayment=("RetryableError", 12))
    assert retried.status == "SUCCEEDED"
    assert tasks.count("AuthorizePayment") == 13

    ended, tasks = await execute(AuthorizePayment=("AuthorizationBudgetSpent", None))
    assert tasks.count("AuthorizePayment") == 1
    assert tasks.steps()[-3:] == COMPENSATION
    assert (ended.error, ended.cause) == ("OrderCancelled", "timeout")


async def test_a_cancel_seen_at_confirm_gives_the_sold_stock_back() -> None:
    ended, tasks = await execute(ConfirmOrder=("OrderCancelRequested", None))

    assert tasks.steps()[-5:] == ["CommitReservation", "ConfirmOrder", *COMPENSATION]
    assert tasks.payload("ReleaseInventory") == {
        "order_id": ORDER_ID, "reason": "customer_cancelled",
    }  # fmt: skip
    assert (ended.status, ended.error, ended.cause) == (
        "FAILED", "OrderCancelled", "customer_cancelled",
    )  # fmt: skip


async def test_a_reservation_lost_at_the_commit_compensates_and_never_confirms() -> None:
    ended, tasks = await execute(CommitReservation=("ReservationExpired", None))

    assert tasks.count("CommitReservation") == 1  # never retried
    assert PIVOT not in tasks.steps()
    assert tasks.steps()[-4:] == ["CommitReservation", *COMPENSATION]
    assert (ended.status, ended.error, ended.cause) == ("FAILED", "OrderCancelled", "timeout")


async def test_a_compensation_that_keeps_failing_is_retried_then_parked_never_skipped() -> None:
    ended, tasks = await execute(
        ReserveInventory=("OutOfStock", None), VoidPayment=("RetryableError", None)
    )

    assert tasks.count("VoidPayment") == 16
    assert "ReleaseInventory" not in tasks.steps()
    assert "FailOrder" not in tasks.steps()
    assert ended.error == "CompensationParked"


async def test_a_compensation_that_fails_for_a_while_still_completes() -> None:
    ended, tasks = await execute(
        ReserveInventory=("OutOfStock", None), FailOrder=("RetryableError", 10)
    )

    assert tasks.count("FailOrder") == 11
    assert (ended.error, ended.cause) == ("OrderCancelled", "out_of_stock")


@pytest.mark.parametrize("step", AFTER_PIVOT)
async def test_a_step_after_the_pivot_that_keeps_failing_is_parked_without_compensating(
    step: str,
) -> None:
    ended, tasks = await execute(**{step: ("StepFailed", None)})

    assert tasks.count(step) == 16
    assert not set(COMPENSATION) & set(tasks.steps())
    assert ended.error == "ConfirmationParked"


async def test_a_commit_that_fails_for_a_while_still_confirms() -> None:
    ended, tasks = await execute(CommitReservation=("RetryableError", 5))

    assert tasks.count("CommitReservation") == 6
    assert tasks.count("ConfirmOrder") == 1
    assert ended.status == "SUCCEEDED"
