"""The operator console's pure parts: its view of the services' tables matches theirs column
for column, which executions a redrive takes (parked ones only), the path drawn from a history,
the definition's graph, the five alert rules read from the file, and one trace read back from
the JSON-lines files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gateway.ops import tables
from gateway.ops.alarms import breaker_reading, load_rules
from gateway.ops.database import iso
from gateway.ops.executions import graph, visited_path
from gateway.ops.traces import read_trace
from gateway.settings import GatewaySettings
from local_supervisor.embedded import free_port
from marketplace_platform.saga.local import HistoryEvent
from marketplace_platform.saga.redrive import RedrivePoint, redrive_point
from services.checkout.adapters import tables as checkout_tables
from services.inventory.adapters import tables as inventory_tables
from services.payment.adapters import tables as payment_tables
from workers.consumers import tables as consumer_tables

OWNERS = {
    "checkout": checkout_tables.metadata,
    "payment": payment_tables.metadata,
    "inventory": inventory_tables.metadata,
    "consumers": consumer_tables.metadata,
}
VIEWS = [
    table
    for metadata in (tables.checkout, tables.payment, tables.inventory, tables.consumers)
    for table in metadata.tables.values()
]


@pytest.mark.parametrize("view", VIEWS, ids=lambda table: table.fullname)
def test_the_consoles_view_of_a_table_matches_its_owners(view: sa.Table) -> None:
    owner = OWNERS[view.schema or ""].tables[view.fullname]
    for column in view.columns:
        assert column.name in owner.columns, f"{view.fullname}.{column.name} is gone"
        assert type(owner.columns[column.name].type) is type(column.type), column.name


def test_the_outbox_schemas_are_every_outbox_there_is() -> None:
    owned = {"checkout", "payment", "inventory", "consumers", "cart"}
    assert set(tables.outboxes) == owned


def item(kind: str, state: str | None, payload: Any) -> HistoryEvent:
    """A history event with what redrive reads of it (its order is the list's)."""
    return HistoryEvent(0, kind, state, payload, None, datetime(2026, 1, 1, tzinfo=UTC))


def entered(state: str, data: Any, kind: str = "Task") -> HistoryEvent:
    return item(f"{kind}StateEntered", state, {"input": data})


def test_a_task_caught_straight_into_a_fail_state_is_redriven_at_that_task() -> None:
    events = [
        item("ExecutionStarted", None, {"input": {}}),
        entered("Reserve", {"a": 1}),
        item("TaskStateExited", "Reserve", {"output": {"a": 1}}),
        entered("Confirm", {"a": 2}),
        item("TaskScheduled", "Confirm", {}),
        item("TaskFailed", "Confirm", {"error": "Boom", "cause": "x"}),
        item("RetryScheduled", "Confirm", {"attempt": 1}),
        item("TaskFailed", "Confirm", {"error": "Boom", "cause": "x"}),
        item("CatchMatched", "Confirm", {"next": "Parked"}),
        item("TaskStateExited", "Confirm", {"output": {}}),
        entered("Parked", {}, kind="Fail"),
        item("ExecutionFailed", None, {"error": "Parked"}),
    ]
    assert redrive_point("FAILED", events) == RedrivePoint("Confirm", {"a": 2})
    assert redrive_point("SUCCEEDED", events) is None
    assert redrive_point("RUNNING", events) is None


def test_an_uncaught_failure_is_redriven_and_a_designed_outcome_is_not() -> None:
    uncaught = [
        entered("Charge", {"n": 1}),
        item("TaskFailed", "Charge", {"error": "Boom"}),
        item("ExecutionFailed", None, {"error": "Boom"}),
    ]
    assert redrive_point("FAILED", uncaught) == RedrivePoint("Charge", {"n": 1})
    cancelled = [
        entered("Reserve", {"n": 1}),
        item("TaskFailed", "Reserve", {"error": "OutOfStock"}),
        item("CatchMatched", "Reserve", {"next": "Why"}),
        entered("Why", {}, kind="Pass"),
        entered("Cancelled", {}, kind="Fail"),
        item("ExecutionFailed", None, {"error": "OrderCancelled"}),
    ]
    assert redrive_point("FAILED", cancelled) is None
    # A branch's failure counts through its Parallel, never by itself.
    branch = [
        entered("Check", {"n": 1}, kind="Parallel"),
        entered("Check/0/Fraud", {"n": 1}),
        item("TaskFailed", "Check/0/Fraud", {"error": "Boom"}),
    ]
    assert redrive_point("FAILED", branch) is None
    parallel = [*branch, item("ParallelFailed", "Check", {"error": "Boom"})]
    assert redrive_point("FAILED", parallel) == RedrivePoint("Check", {"n": 1})


def at(second: int) -> datetime:
    return datetime(2026, 1, 1, 0, 0, second, tzinfo=UTC)


def test_the_path_lists_each_visit_with_its_attempts_and_error() -> None:
    events = [
        HistoryEvent(1, "ExecutionStarted", None, {}, None, at(0)),
        HistoryEvent(2, "TaskStateEntered", "Confirm", {"input": {}}, None, at(1)),
        HistoryEvent(3, "TaskStateEntered", "Confirm/0/Inner", {"input": {}}, None, at(1)),
        HistoryEvent(4, "TaskFailed", "Confirm", {"error": "Boom"}, None, at(2)),
        HistoryEvent(5, "RetryScheduled", "Confirm", {"attempt": 1}, None, at(2)),
        HistoryEvent(6, "TaskFailed", "Confirm", {"error": "Boom"}, None, at(3)),
        HistoryEvent(7, "TaskStateExited", "Confirm", {}, None, at(3)),
        HistoryEvent(8, "FailStateEntered", "Parked", {"input": {}}, None, at(3)),
        HistoryEvent(9, "ExecutionRedriven", "Confirm", {"redrive_count": 1}, None, at(9)),
        HistoryEvent(10, "TaskStateExited", "Confirm", {}, None, at(10)),
    ]
    path = visited_path(events)
    assert [(p["state"], p["attempts"], p["error"]) for p in path] == [
        ("Confirm", 2, "Boom"),
        ("Parked", 1, None),
        ("Confirm", 1, None),
    ]
    assert path[0]["exited_at"] == "2026-01-01T00:00:03.000000Z"
    assert path[2]["exited_at"] == "2026-01-01T00:00:10.000000Z"


def test_the_checkout_definition_as_a_graph() -> None:
    definition = json.loads(GatewaySettings().ops_saga_definition.read_text())
    drawn = graph(definition)
    by_name = {state["name"]: state for state in drawn["states"]}
    assert drawn["start_at"] == "CheckOrder"
    assert set(by_name) == set(definition["States"])
    assert by_name["ConfirmOrder"]["next"] == [
        "OrderConfirmed",
        "ReasonCustomerCancelled",
        "ConfirmationParked",
    ]
    assert by_name["ConfirmationParked"]["end"]
    assert not by_name["ConfirmOrder"]["end"]
    assert "CancelledOutOfStock" in by_name["CancelledBecause"]["next"]


def test_the_five_rules_with_their_thresholds_and_summaries() -> None:
    rules = {rule.name: rule for rule in load_rules(GatewaySettings().ops_alert_rules_file)}
    assert set(rules) == {
        "CheckoutCompensationParked",
        "CheckoutSagaStuck",
        "CheckoutDeadLetterQueueNotEmpty",
        "CheckoutOutboxLag",
        "CheckoutPspBreakerOpen",
    }
    lag = rules["CheckoutOutboxLag"]
    assert (lag.severity, lag.threshold) == ("page", 60.0)
    assert not lag.fires(60.0)
    assert lag.fires(60.5)
    assert not lag.fires(None)
    assert lag.render(61.25, {"schema": "payment"}) == (
        "the oldest unpublished payment outbox row is 61.2s old"
    )
    breaker = rules["CheckoutPspBreakerOpen"]
    assert breaker.fires(1.0)
    assert not breaker.fires(0.0)
    dlq = rules["CheckoutDeadLetterQueueNotEmpty"]
    assert dlq.severity == "ticket"
    assert dlq.render(3.0, {"queue": "shipping-dlq"}).startswith("shipping-dlq holds 3 dead")


def span_line(trace_id: str, span_id: str, parent: str, start: int, end: int) -> str:
    span = {
        "traceId": trace_id,
        "spanId": span_id,
        "parentSpanId": parent,
        "name": f"span-{span_id[:2]}",
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(end),
        "status": {"code": "STATUS_CODE_ERROR"} if parent else {},
        "attributes": [{"key": "http.status_code", "value": {"intValue": "200"}}],
    }
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "gateway"}}]}
    document = {"resourceSpans": [{"resource": resource, "scopeSpans": [{"spans": [span]}]}]}
    return json.dumps(document)


def test_one_trace_is_read_back_from_the_files_and_no_other(tmp_path: Path) -> None:
    wanted, other = "a" * 32, "b" * 32
    lines = [
        span_line(wanted, "11" * 8, "", 1_000_000_000, 1_050_000_000),
        span_line(other, "33" * 8, "", 900_000_000, 1_000_000_000),
        span_line(wanted, "22" * 8, "11" * 8, 1_010_000_000, 1_020_000_000),
    ]
    (tmp_path / "gateway.jsonl").write_text("\n".join(lines) + "\n\n")
    spans = read_trace(tmp_path, wanted)
    assert [(s["span_id"], s["parent_span_id"]) for s in spans] == [
        ("11" * 8, None),
        ("22" * 8, "11" * 8),
    ]
    assert [(s["start_ms"], s["duration_ms"], s["status"]) for s in spans] == [
        (0.0, 50.0, "unset"),
        (10.0, 10.0, "error"),
    ]
    assert spans[0]["attributes"] == {"http.status_code": "200"}
    assert read_trace(tmp_path, "c" * 32) == []
    assert read_trace(tmp_path / "missing", wanted) == []


def test_times_sort_as_strings_in_the_order_they_happened() -> None:
    whole, later = at(3), at(3).replace(microsecond=1)
    assert iso(whole) == "2026-01-01T00:00:03.000000Z"
    assert iso(whole) < iso(later)  # type: ignore[operator]
    assert iso(None) is None


async def test_the_breaker_is_unknown_without_a_metrics_endpoint_or_its_answer() -> None:
    unset = await breaker_reading(None, 1.0)
    assert (unset.value, unset.panel) == (None, "payment")
    assert unset.unknown_because == "no payment metrics endpoint configured"
    away = await breaker_reading(f"http://127.0.0.1:{free_port()}/metrics", 1.0)
    assert away.value is None
    assert away.unknown_because is not None
    assert away.unknown_because.startswith("payment metrics unreachable")
