"""Wait for the system to settle, read the databases, the PSP simulator's own records and the
carrier's bookings into a Snapshot (read-only SQL and read rpcs), then run the harness's own
reconciliation and the stock audit. The PSP is listed before that reconciliation, so a hold
only the checker's ReconcilePayments would release still counts against the system."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import httpx
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration

from local_supervisor.stack import role_of
from marketplace.common.v1 import ids_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as inventory_pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from marketplace.payment.v1 import payment_service_pb2 as payment_pb
from marketplace.payment.v1 import payment_service_pb2_grpc as payment_grpc
from marketplace_platform.event_bus import decode_message_body
from marketplace_platform.queues.definitions import DEFAULT_RULES_FILE, load_queue_definitions
from simulators.carrier.bookings import read_bookings
from verification.snapshot import (
    CONFIRMED_STATUSES,
    CarrierBooking,
    ClientCheckout,
    CustomerCancel,
    InjectedPoison,
    Intent,
    MessageFlow,
    Order,
    OrderLine,
    QueuedMessage,
    Snapshot,
    StockLevel,
    StoredKey,
)
from verification.stack import REPO, ChaosStack, carrier_bookings_path

# ReconcilePayments voids authorizations with no CONFIRMED order once they are this old (the
# contract's minimum), so the checker waits for suspects to age past it before it runs.
ORPHAN_AFTER_SECONDS = 60
ORPHAN_MARGIN_SECONDS = 3  # the PSP's creation times are whole seconds
RPC_ATTEMPTS = 30


@dataclass(frozen=True)
class Scope:
    """What belongs to this run: its customers' prefix and its SKUs."""

    customer_prefix: str
    skus: tuple[str, ...]


async def _orders(db: asyncpg.Connection, scope: Scope) -> list[Order]:
    rows = await db.fetch(
        """SELECT order_id::text AS order_id, customer_id, cart_id::text AS cart_id, status,
                  failure_reason, subtotal + coalesce(tax, 0) AS total
             FROM checkout.orders WHERE customer_id LIKE $1""",
        scope.customer_prefix + "%",
    )
    lines: dict[str, list[OrderLine]] = {}
    for line in await db.fetch(
        """SELECT l.order_id::text AS order_id, l.sku, l.merchant_id, l.quantity
             FROM checkout.order_lines l JOIN checkout.orders o USING (order_id)
            WHERE o.customer_id LIKE $1""",
        scope.customer_prefix + "%",
    ):
        lines.setdefault(line["order_id"], []).append(
            OrderLine(sku=line["sku"], merchant_id=line["merchant_id"], quantity=line["quantity"])
        )
    return [
        Order(
            order_id=row["order_id"],
            customer_id=row["customer_id"],
            cart_id=row["cart_id"],
            status=row["status"],
            failure_reason=row["failure_reason"],
            total_minor=int(row["total"]),
            lines=tuple(lines.get(row["order_id"], ())),
        )
        for row in rows
    ]


async def _running_sagas(db: asyncpg.Connection, order_ids: Sequence[str]) -> list[str]:
    rows = await db.fetch(
        "SELECT name FROM saga.executions WHERE status = 'RUNNING' AND name = ANY($1::text[])",
        list(order_ids),
    )
    return sorted(row["name"] for row in rows)


async def _message_flow(db: asyncpg.Connection) -> MessageFlow:
    schemas = await db.fetch(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox'"
    )
    unpublished = {}
    for row in schemas:
        schema = row["table_schema"]
        unpublished[schema] = await db.fetchval(
            f'SELECT count(*) FROM "{schema}".outbox WHERE published_at IS NULL'
        )
    # Every declared queue and DLQ is reported, the empty ones too.
    depths: dict[str, int] = {}
    dead_letter_queues = set()
    for queue in load_queue_definitions(REPO / DEFAULT_RULES_FILE):
        depths[queue.name] = 0
        dead_letter_queues.add(queue.dead_letter_queue)
    messages = [
        QueuedMessage(
            queue=row["queue"],
            message_id=row["message_id"],
            dead_letter=row["queue"] in dead_letter_queues,
            describes=describe_message(row["body"]),
        )
        for row in await db.fetch(
            "SELECT queue, message_id::text AS message_id, body FROM queues.messages ORDER BY id"
        )
    ]
    for message in messages:
        if not message.dead_letter:
            depths[message.queue] = depths.get(message.queue, 0) + 1
    return MessageFlow(
        unpublished_outbox=unpublished,
        queue_depths=depths,
        dead_letter_queues=tuple(sorted(dead_letter_queues)),
        messages=tuple(messages),
    )


def describe_message(body: str) -> str:
    """A queued message's event type and aggregate, as its body tells them."""
    try:
        envelope = decode_message_body(body)
    except (ValueError, TypeError, json_format.Error):  # JSONDecodeError is a ValueError
        return "not an event"
    kind = envelope.event_type.rsplit(".", 1)[-1] or "an event of no type"
    return f"{kind} of {envelope.aggregate_type} {envelope.aggregate_id}"


async def _stored_keys(db: asyncpg.Connection, scope: Scope) -> list[StoredKey]:
    rows = await db.fetch(
        """SELECT customer_id, key, state, response->>'order_id' AS order_id
             FROM checkout.idempotency_keys WHERE customer_id LIKE $1""",
        scope.customer_prefix + "%",
    )
    return [
        StoredKey(
            customer_id=row["customer_id"],
            key=row["key"],
            state=row["state"],
            order_id=row["order_id"],
        )
        for row in rows
    ]


def carrier_bookings(stack: ChaosStack) -> tuple[CarrierBooking, ...] | None:
    """What the carrier simulator booked for the run; None when it kept no bookings file."""
    try:
        found = read_bookings(carrier_bookings_path(stack.data_dir))
    except FileNotFoundError:
        return None
    return tuple(
        CarrierBooking(
            shipment_id=b.shipment_id,
            order_id=b.order_id,
            merchant_id=b.merchant_id,
            called_back=b.called_back,
        )
        for b in found
    )


def has_relay(processes: Iterable[str]) -> bool:
    """Whether the stack runs an outbox relay (without one no event reaches any queue)."""
    return any("relay" in name for name in processes)


async def settle(
    stack: ChaosStack, scope: Scope, *, within: float, pipeline: bool
) -> tuple[float, int]:
    """Wait until no order is PENDING, no saga of the run's orders RUNNING (a compensation may
    still be retrying after its order was swept) and, with the event pipeline, the queues are
    drained; return the seconds waited and the orders still unsettled at the bound."""
    started = time.monotonic()
    db = await asyncpg.connect(stack.database_url)
    try:
        while True:
            pending = await db.fetchval(
                """SELECT count(*) FROM checkout.orders
                    WHERE customer_id LIKE $1
                      AND status NOT IN ('CONFIRMED', 'CANCELLED', 'SHIPPED')""",
                scope.customer_prefix + "%",
            )
            busy = await db.fetchval(
                """SELECT count(*) FROM saga.executions e
                     JOIN checkout.orders o ON e.name = o.order_id::text
                    WHERE e.status = 'RUNNING' AND o.customer_id LIKE $1""",
                scope.customer_prefix + "%",
            )
            if pipeline:
                flow = await _message_flow(db)
                busy += sum(flow.unpublished_outbox.values()) + sum(flow.queue_depths.values())
            waited = time.monotonic() - started
            if (pending == 0 and busy == 0) or waited > within:
                return waited, int(pending)
            await asyncio.sleep(1.0)
    finally:
        await db.close()


async def list_intents(psp: httpx.AsyncClient) -> list[Intent]:
    """Every payment intent at the PSP simulator, page by page."""
    intents: list[Intent] = []
    after: str | None = None
    while True:
        params = {"limit": "100"} | ({"starting_after": after} if after else {})
        answer = await psp.get("/v1/payment_intents", params=params, timeout=30)
        answer.raise_for_status()
        page: dict[str, Any] = answer.json()
        for item in page["data"]:
            intents.append(
                Intent(
                    intent_id=item["id"],
                    order_id=item["metadata"].get("order_id"),
                    status=item["status"],
                    amount=item["amount"],
                    amount_capturable=item["amount_capturable"],
                    amount_received=item["amount_received"],
                    amount_refunded=item.get("amount_refunded", 0),
                    created=int(item.get("created", 0)),
                )
            )
            after = item["id"]
        if not page.get("has_more") or not page["data"]:
            return intents


async def _with_retries(call: Any, request: Any) -> Any:
    """A read or reconcile rpc, retried while a restarted service comes back."""
    for attempt in range(RPC_ATTEMPTS):
        try:
            return await call(request, timeout=60)
        except grpc.aio.AioRpcError as error:
            retryable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                                         grpc.StatusCode.DEADLINE_EXCEEDED)  # fmt: skip
            if not retryable or attempt == RPC_ATTEMPTS - 1:
                raise
            await asyncio.sleep(1.0)
    raise AssertionError("unreachable")


async def reconcile_payments(
    stack: ChaosStack, psp: httpx.AsyncClient, orders: Sequence[Order], before: Sequence[Intent]
) -> tuple[int, tuple[str, ...]]:
    """Let suspect authorizations in `before` age past the orphan threshold, run
    ReconcilePayments; the orphans it says it voided, and the holds it released."""
    confirmed = {o.order_id for o in orders if o.status in CONFIRMED_STATUSES}
    suspects = [i for i in before if i.held and i.order_id not in confirmed]
    if suspects:
        # The PSP runs on this machine, so its creation times are on our wall clock.
        youngest = max(i.created for i in suspects)
        wait = youngest + ORPHAN_AFTER_SECONDS + ORPHAN_MARGIN_SECONDS - time.time()
        await asyncio.sleep(max(wait, 0.0))
    voided = await _reconcile(stack)
    after = {i.intent_id: i for i in await list_intents(psp)}
    released = tuple(
        i.intent_id
        for i in before
        if i.held and i.intent_id in after and not after[i.intent_id].held
    )
    return voided, released


async def _reconcile(stack: ChaosStack) -> int:
    async with grpc.aio.insecure_channel(stack.grpc_address("payment")) as channel:
        stub = payment_grpc.PaymentServiceStub(channel)
        request = payment_pb.ReconcilePaymentsRequest(
            idempotency_key=f"chaos-reconcile-{uuid.uuid4().hex}",
            orphan_after=Duration(seconds=ORPHAN_AFTER_SECONDS),
        )
        response = await _with_retries(stub.ReconcilePayments, request)
    return sum(orphan.voided for orphan in response.report.orphan_authorizations)


async def audit_stock(stack: ChaosStack, skus: Sequence[str]) -> list[str]:
    """Inventory's own audit of the SKUs against its movement ledger."""
    async with grpc.aio.insecure_channel(stack.grpc_address("inventory")) as channel:
        stub = inventory_grpc.InventoryServiceStub(channel)
        request = inventory_pb.AuditStockRequest(skus=[ids_pb2.Sku(value=s) for s in skus])
        response = await _with_retries(stub.AuditStock, request)
    return [f"{d.sku.value}: {d.description}" for d in response.discrepancies]


@dataclass(frozen=True, kw_only=True)
class ClientRecords:
    """What the harness itself did and was answered: checkouts, cancels, poison injected."""

    checkouts: Sequence[ClientCheckout]
    cancels: Sequence[CustomerCancel] = ()
    poison: Sequence[InjectedPoison] = ()


def _not_checked_why(processes: set[str], relay: bool, stack: ChaosStack) -> str:
    if "shipping" not in processes:
        return "no shipping consumer in the stack"
    if not relay:
        return "the stack runs no outbox relay, so no event reaches the shipping queue"
    return (
        f"the carrier kept no bookings file at {carrier_bookings_path(stack.data_dir)}: the "
        "shipping consumer does not pass CARRIER_BOOKINGS_PATH to its carrier simulator"
    )


async def take_snapshot(
    stack: ChaosStack,
    psp: httpx.AsyncClient,
    scope: Scope,
    *,
    initial_stock: dict[str, int],
    clients: ClientRecords,
    settle_seconds: float,
) -> tuple[Snapshot, int]:
    """Read everything the invariants need, the PSP before the harness reconciles; then
    reconcile and audit. Also the orphans ReconcilePayments says it voided."""
    processes = {role_of(name) for name in stack.processes()}  # "shipping@zone-b": shipping
    relay = has_relay(processes)
    db = await asyncpg.connect(stack.database_url)
    try:
        orders = await _orders(db, scope)
        intents = await list_intents(psp)  # before any reconciliation of the harness's own
        order_ids = [o.order_id for o in orders]
        stored_keys = await _stored_keys(db, scope)
        running = await _running_sagas(db, order_ids)
        flow = await _message_flow(db) if relay else None
        bookings = carrier_bookings(stack) if relay and "shipping" in processes else None
        stock = [
            StockLevel(sku=r["sku"], on_hand=r["on_hand"], reserved=r["reserved"], sold=r["sold"])
            for r in await db.fetch(
                "SELECT sku, on_hand, reserved, sold FROM inventory.stock_items"
                " WHERE sku = ANY($1::text[])",
                list(scope.skus),
            )
        ]
        orphans, released = await reconcile_payments(stack, psp, orders, intents)
    finally:
        await db.close()
    snapshot = Snapshot(
        orders=tuple(orders),
        client_checkouts=tuple(clients.checkouts),
        initial_stock=initial_stock,
        stock=tuple(stock),
        audit_discrepancies=tuple(await audit_stock(stack, scope.skus)),
        intents=tuple(intents),
        released_by_reconciliation=released,
        stored_keys=tuple(stored_keys),
        cancels=tuple(clients.cancels),
        running_sagas=tuple(running),
        settle_seconds=settle_seconds,
        bookings=bookings,
        bookings_not_checked=_not_checked_why(processes, relay, stack),
        message_flow=flow,
        message_flow_not_checked="the stack runs no outbox relay, so no event is queued",
        injected_poison=tuple(clients.poison),
    )
    return snapshot, orphans
