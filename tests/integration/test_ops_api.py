"""The operator console's API (/ops/api) on the whole local stack as real processes (tracing to
JSON-lines files), one stack for the module: admin tokens only; an order placed through the
gateway shows its timeline (order, saga, payment, events) and its execution's path to a
terminal state, its reservation in stock and its trace; a parked execution is redriven (a
finished one refused with 409); a dead letter is listed, peeked and redriven; the five alarms
are listed and the DLQ one fires while a dead letter waits."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth import ADMIN_SCOPE
from marketplace_platform.event_bus import envelope_to_detail
from marketplace_platform.event_bus.rules import load_routing
from marketplace_platform.queues.postgres import PostgresQueues
from marketplace_platform.saga.local import LocalSagaStarter
from marketplace_platform.saga.tables import executions
from tests.integration.test_ops_redrive import (
    PARKING_DEFINITION,
    Gate,
    parked_execution,
    parking_engine,
)
from tests.support import shopper
from tests.support.events import order_placed
from tests.support.polling import eventually
from tests.support.stack import LaunchedStack, running_stack
from workers.saga_engine.asl.interpreter import Position
from workers.saga_engine.asl.machine import StateMachine
from workers.saga_engine.store import ExecutionStore

# A database of the module's own: the DLQ and alarm assertions count what is in every queue, and
# other modules' stacks leave dead letters in the session's database.
pytestmark = [pytest.mark.stack, pytest.mark.own_database]

ADMIN = shopper.bearer("operator-1", ADMIN_SCOPE)
WITHIN = 60.0


@dataclass(frozen=True)
class Placed:
    """The stack, and one order placed and settled through its gateway."""

    stack: LaunchedStack
    http: httpx.AsyncClient
    order_id: str
    customer: str
    sku: str
    trace_id: str


@pytest.fixture(scope="module")
async def placed(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Placed]:
    data = tmp_path_factory.mktemp("ops-stack")
    settings = {
        "OTEL_TRACES_EXPORTER": "jsonl",
        "OTEL_TRACES_JSONL_DIR": str(data / "traces"),
        "OTEL_TRACES_SAMPLER_ARG": "1",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    async with running_stack(module_database_url, data / "stack", settings) as stack:
        await stack.wait_for_line("all services SERVING", within=90)
        async with httpx.AsyncClient(base_url=stack.url("gateway"), timeout=30) as http:
            customer = f"cust-{uuid.uuid4().hex[:8]}"
            sku = await shopper.stocked_sku(http, on_hand=5, price_minor=1250)
            cart_id = await shopper.cart_holding(http, customer, sku, 2)
            trace_id = uuid.uuid4().hex
            answer = await http.post(
                "/v1/checkouts",
                json={
                    "cart_id": cart_id,
                    "payment_method": "pm_card_visa",
                    "shipping_address": shopper.ADDRESS,
                },
                headers=shopper.bearer(customer)
                | {
                    "Idempotency-Key": uuid.uuid4().hex,
                    "traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01",
                },
            )
            assert answer.status_code in (200, 201, 202), answer.text
            order_id = answer.json()["order_id"]
            order = await shopper.settled(http, customer, order_id)
            assert order["status"] in ("CONFIRMED", "SHIPPED"), order
            yield Placed(stack, http, order_id, customer, sku, trace_id)


async def ops(placed: Placed, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return await placed.http.request(method, f"/ops/api{path}", headers=ADMIN, **kwargs)


async def test_only_an_admin_token_reads_the_console(placed: Placed) -> None:
    page = await placed.http.get("/ops")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    script = await placed.http.get("/ops/static/console.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert (await placed.http.get("/ops/static/no-such-file.js")).status_code == 404
    anonymous = await placed.http.get("/ops/api/orders")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    customer = await placed.http.get("/ops/api/orders", headers=shopper.bearer(placed.customer))
    assert customer.status_code == 403
    assert "admin" in customer.json()["detail"]
    admin = await ops(placed, "GET", "/orders")
    assert admin.status_code == 200
    assert (await ops(placed, "GET", "/orders?limit=0")).status_code == 400
    assert (await ops(placed, "GET", "/orders/not-a-uuid")).status_code == 400
    assert (await ops(placed, "GET", f"/orders/{uuid.uuid4()}")).status_code == 404


async def test_an_order_shows_its_timeline_and_its_executions_path(placed: Placed) -> None:
    listed = (await ops(placed, "GET", f"/orders?q={placed.customer}")).json()["orders"]
    assert [order["order_id"] for order in listed] == [placed.order_id]
    assert listed[0]["total"]["amount"] >= 2500
    by_id = (await ops(placed, "GET", f"/orders?q={placed.order_id}")).json()["orders"]
    assert [order["order_id"] for order in by_id] == [placed.order_id]

    detail = (await ops(placed, "GET", f"/orders/{placed.order_id}")).json()
    assert detail["order"]["lines"] == [
        {"sku": placed.sku, "quantity": 2, "unit_price": {"amount": 1250, "currency": "USD"}}
    ]
    assert detail["execution"]["status"] == "SUCCEEDED"
    assert detail["trace_id"] == placed.trace_id
    timeline = detail["timeline"]
    assert {"order", "saga", "payment", "event", "reservation"} <= {e["source"] for e in timeline}
    assert [e["at"] for e in timeline] == sorted(e["at"] for e in timeline)
    kinds = {e["kind"] for e in timeline}
    assert {"ExecutionStarted", "ExecutionSucceeded", "OrderCreated"} <= kinds
    assert any(e["source"] == "event" and "OrderPlaced" in e["kind"] for e in timeline)

    execution = (await ops(placed, "GET", f"/executions/{placed.order_id}")).json()
    states = {state["name"]: state for state in execution["definition"]["states"]}
    path = [visit["state"] for visit in execution["path"]]
    assert path[0] == execution["definition"]["start_at"] == "CheckOrder"
    assert path[-1] == execution["current_state"] == "OrderConfirmed"
    assert states[path[-1]]["end"]
    assert all(state in states for state in path)
    assert execution["redrivable"] is False
    refused = await ops(placed, "POST", f"/executions/{placed.order_id}/redrive", json={})
    assert refused.status_code == 409
    assert (await ops(placed, "GET", f"/executions/{uuid.uuid4()}")).status_code == 404


async def test_a_parked_execution_is_redriven_through_the_console(
    placed: Placed, engine: AsyncEngine, machine_name: str
) -> None:
    gate = Gate()
    name = await parked_execution(engine, machine_name, gate)
    before = (await ops(placed, "GET", f"/executions/{name}")).json()
    assert before["redrivable"] is True
    assert before["execution"]["status"] == "FAILED"
    assert [visit["state"] for visit in before["path"]] == ["Reserve", "Confirm", "Parked"]
    assert before["path"][1]["attempts"] == 2
    assert before["path"][1]["error"] == "RuntimeError"

    alarms = {a["name"]: a for a in (await ops(placed, "GET", "/alarms")).json()["alarms"]}
    parked_alarm = alarms["CheckoutCompensationParked"]
    assert parked_alarm["firing"] is True
    assert parked_alarm["points_at"] == {"panel": "executions", "ref": name}

    redriven = await ops(placed, "POST", f"/executions/{name}/redrive")
    assert redriven.status_code == 200, redriven.text
    assert redriven.json() == {"name": name, "status": "RUNNING", "state": "Confirm"}
    # The action's log line, once the supervisor has relayed the gateway's output.
    logged = await eventually(
        lambda: next((line for line in placed.stack.lines if _action_line(line, name)), None),
        what="the ops action line",
    )
    assert '"result": "redriven at Confirm"' in logged
    assert '"request_id": null' not in logged
    assert '"request_id": "' in logged
    again = await ops(placed, "POST", f"/executions/{name}/redrive")
    assert again.status_code == 409

    gate.open = True
    await parking_engine(engine, machine_name, gate).run_until_idle()
    after = (await ops(placed, "GET", f"/executions/{name}")).json()
    assert after["execution"]["status"] == "SUCCEEDED"
    assert [visit["state"] for visit in after["path"]][-2:] == ["Confirm", "Done"]
    assert after["redrivable"] is False


def _action_line(line: str, target: str) -> bool:
    return '"ops action"' in line and f'"target": "{target}"' in line and "operator-1" in line


async def test_a_dead_letter_is_listed_peeked_alarmed_and_redriven(
    placed: Placed, engine: AsyncEngine
) -> None:
    (email,) = [q for q in load_routing().queues if q.name == "email"]
    queues = PostgresQueues(engine, [email])
    about = str(uuid.uuid4())
    envelope = order_placed(about)
    message_id = await queues.send(
        email.dead_letter_queue, json.dumps({"detail": envelope_to_detail(envelope)})
    )

    listed = (await ops(placed, "GET", "/queues")).json()["queues"]
    by_name = {queue["name"]: queue for queue in listed}
    assert by_name[email.dead_letter_queue]["dlq"] is True
    assert by_name[email.dead_letter_queue]["source"] == "email"
    assert by_name[email.dead_letter_queue]["visible"] >= 1
    assert by_name["email"]["dlq"] is False

    peeked = (await ops(placed, "GET", "/queues/email/dead-letters")).json()
    assert peeked["dlq"] == email.dead_letter_queue
    (dead,) = [m for m in peeked["messages"] if m["message_id"] == message_id]
    assert dead["event_type"] == envelope.event_type
    assert dead["order_id"] == about
    # Peeking took nothing: it is still there.
    assert (await queues.stats(email.dead_letter_queue)).visible >= 1
    assert (await ops(placed, "GET", "/queues/no-such-queue/dead-letters")).status_code == 404

    alarms = (await ops(placed, "GET", "/alarms")).json()["alarms"]
    by_alarm = {alarm["name"]: alarm for alarm in alarms}
    assert set(by_alarm) == {
        "CheckoutCompensationParked",
        "CheckoutSagaStuck",
        "CheckoutDeadLetterQueueNotEmpty",
        "CheckoutOutboxLag",
        "CheckoutPspBreakerOpen",
    }
    dlq_alarm = by_alarm["CheckoutDeadLetterQueueNotEmpty"]
    assert dlq_alarm["firing"] is True
    assert dlq_alarm["value"] >= 1
    assert dlq_alarm["severity"] == "ticket"
    assert dlq_alarm["points_at"]["panel"] == "queues"
    assert email.dead_letter_queue in dlq_alarm["summary"]
    # The supervisor points the console at payment's metrics: the breaker is known, and shut.
    breaker = by_alarm["CheckoutPspBreakerOpen"]
    assert (breaker["value"], breaker["firing"]) == (0.0, False)
    assert by_alarm["CheckoutSagaStuck"]["firing"] is False

    for refused_body in (b"not json", b'{"max_messages": "' + b"9" * 2000 + b'"}'):
        refused = await ops(placed, "POST", "/queues/email/redrive", content=refused_body)
        assert refused.status_code == 400, refused.text
    redriven = await ops(placed, "POST", "/queues/email/redrive", json={"max_messages": None})
    assert redriven.status_code == 200, redriven.text
    assert redriven.json() == {"queue": "email", "redriven": 1}
    assert (
        await ops(placed, "POST", "/queues/email/redrive", json={"max_messages": 0})
    ).status_code == 400


async def test_stock_shows_the_orders_reservation(placed: Placed) -> None:
    (item,) = (await ops(placed, "GET", f"/stock?sku={placed.sku}")).json()["items"]
    assert item["sku"] == placed.sku
    assert item["available"] == item["on_hand"] - item["reserved"]
    (reservation,) = item["reservations"]
    assert (reservation["order_id"], reservation["quantity"]) == (placed.order_id, 2)


async def test_the_orders_trace_is_read_from_the_trace_files(placed: Placed) -> None:
    spans: list[dict[str, Any]] = []
    async with asyncio.timeout(WITHIN):
        while True:
            answer = await ops(placed, "GET", f"/traces/{placed.trace_id}")
            if answer.status_code == 200:
                spans = answer.json()["spans"]
                names = {span["name"] for span in spans}
                if "POST /v1/checkouts" in names and any(
                    n.startswith("saga.state ") for n in names
                ):
                    break
            else:
                assert answer.status_code == 404, answer.text
            await asyncio.sleep(0.3)
    services = {span["service"] for span in spans}
    assert {"gateway", "checkout", "payment"} <= services
    assert spans[0]["start_ms"] == 0.0
    assert [span["start_ms"] for span in spans] == sorted(span["start_ms"] for span in spans)
    assert (await ops(placed, "GET", f"/traces/{uuid.uuid4().hex}")).status_code == 404


async def test_an_execution_stuck_in_one_state_fires_its_alarm(
    placed: Placed, engine: AsyncEngine, machine_name: str
) -> None:
    # An execution of a machine no engine runs, in Confirm since an hour ago (the bound: 300 s).
    name = str(uuid.uuid4())
    await LocalSagaStarter(engine, state_machine=machine_name).start_execution(
        name=name, payload={"order_id": name}
    )
    store = ExecutionStore(engine)
    claim = await store.claim(state_machine=machine_name, owner="test", lease_seconds=30)
    assert claim is not None
    an_hour_ago = claim.database_now - timedelta(hours=1)
    await store.begin(
        claim,
        Position("Confirm", {"order_id": name}, an_hour_ago),
        machine=StateMachine.from_definition(PARKING_DEFINITION),
        deadline=None,
        events=[],
        run_at=claim.database_now + timedelta(days=1),
        release=True,
    )
    try:
        alarms = {a["name"]: a for a in (await ops(placed, "GET", "/alarms")).json()["alarms"]}
        stuck = alarms["CheckoutSagaStuck"]
        assert (stuck["firing"], stuck["value"]) == (True, 1.0)
        assert stuck["points_at"] == {"panel": "executions", "ref": name}
        assert stuck["summary"] == "1 checkout saga execution(s) stuck in one state"
    finally:
        async with engine.begin() as connection:
            await connection.execute(
                executions.update().where(executions.c.name == name).values(status="TIMED_OUT")
            )
