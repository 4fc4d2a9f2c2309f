"""The checkout benchmark's HTTP traffic: the catalog, carts made ahead, timed checkouts, and
the orders' outcomes read back from checkout's table once they have settled."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import asyncpg  # type: ignore[import-untyped]
import orjson

from gateway.auth import ADMIN_SCOPE, issue_token
from gateway.settings import DEV_JWT_SECRET
from marketplace_platform.queues.definitions import DEFAULT_RULES_FILE, load_queue_definitions
from verification.progress import ProgressLine

REPO = Path(__file__).resolve().parents[1]
CUSTOMER_PREFIX = "bench-"  # every customer the benchmark makes, and no one else
ON_HAND = 1_000_000_000  # no checkout of a run is refused for stock
PRICE_MINOR = 2_500
PREPARE_IN_FLIGHT = 32
PREPARE_ATTEMPTS = 6
SETTLE_WITHIN = 120.0
ADDRESS = {
    "name": "Bench Customer", "line1": "1 Load St", "city": "Springfield", "postal_code": "12345",
    "country": "US",
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class PreparedCheckout:
    """A filled cart of its own customer, and the checkout request ready to send."""

    customer_id: str
    cart_id: str
    idempotency_key: str
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One POST /v1/checkouts: when it was sent (wall clock), how long it took, what came back."""

    request: PreparedCheckout
    sent_at: float
    seconds: float
    status: int
    order_id: str | None


@dataclass(frozen=True, kw_only=True)
class Window:
    """The attempts of one timed step, and when it started and ended (wall clock)."""

    attempts: tuple[Attempt, ...]
    started_at: float
    ended_at: float


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """An accepted order as checkout stored it once it settled."""

    order_id: str
    status: str
    failure_reason: str | None
    settled_at: float


def bearer(subject: str, *scopes: str) -> dict[str, str]:
    """An Authorization header with a development token."""
    token = issue_token(secret=DEV_JWT_SECRET, subject=subject, scopes=scopes)
    return {"Authorization": f"Bearer {token}"}


def http_session(gateway_url: str, connections: int) -> aiohttp.ClientSession:
    """One keep-alive session to the gateway with room for `connections` at once."""
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    timeout = aiohttp.ClientTimeout(total=30)
    return aiohttp.ClientSession(base_url=gateway_url, connector=connector, timeout=timeout)


async def stock_catalog(session: aiohttp.ClientSession, skus: int) -> list[str]:
    """Create `skus` products with ample stock; return their SKUs."""
    admin = bearer("ops-bench", ADMIN_SCOPE)
    run = uuid.uuid4().hex[:8]
    names = [f"BENCH-{run}-{number:04d}" for number in range(skus)]
    for sku in names:
        product = {"name": "Bench mug", "price": {"amount_minor": PRICE_MINOR, "currency": "USD"}}
        await _expect(session.put(f"/v1/admin/products/{sku}", json=product, headers=admin), 200)
        stock = {"on_hand": ON_HAND}
        await _expect(session.put(f"/v1/admin/inventory/{sku}", json=stock, headers=admin), 200)
    return names


async def prepare_checkouts(
    session: aiohttp.ClientSession, skus: Sequence[str], count: int, *, card: str
) -> list[PreparedCheckout]:
    """`count` carts of distinct customers, one random SKU each, and their checkout requests."""
    gate = asyncio.Semaphore(PREPARE_IN_FLIGHT)

    async def one() -> PreparedCheckout:
        async with gate:
            customer = f"{CUSTOMER_PREFIX}{uuid.uuid4().hex[:16]}"
            headers = bearer(customer)
            cart = await _retrying(lambda: session.post("/v1/carts", json={}, headers=headers), 201)
            cart_id = str(cart["cart_id"])
            line = {"quantity": 1}
            path = f"/v1/carts/{cart_id}/items/{random.choice(skus)}"
            await _retrying(lambda: session.put(path, json=line, headers=headers), 200)
        body = {"cart_id": cart_id, "payment_method": card, "shipping_address": ADDRESS}
        key = uuid.uuid4().hex
        return PreparedCheckout(
            customer_id=customer,
            cart_id=cart_id,
            idempotency_key=key,
            headers=headers | {"Idempotency-Key": key, "Content-Type": "application/json"},
            body=orjson.dumps(body),
        )

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def closed_loop(
    session: aiohttp.ClientSession,
    prepared: Sequence[PreparedCheckout],
    concurrency: int,
    progress: ProgressLine | None = None,
) -> Window:
    """`concurrency` clients each send their next checkout as soon as the last one answered;
    each answer counted on `progress`."""
    queue = list(reversed(prepared))
    attempts: list[Attempt] = []

    async def client() -> None:
        while queue:
            attempts.append(await _check_out(session, queue.pop()))
            if progress is not None:
                progress.update(len(attempts))

    started_at = time.time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return Window(attempts=tuple(attempts), started_at=started_at, ended_at=time.time())


async def open_loop(
    session: aiohttp.ClientSession,
    prepared: Sequence[PreparedCheckout],
    rate: float,
    progress: ProgressLine | None = None,
) -> Window:
    """Send the checkouts at a fixed rate, whatever the answers' pace (arrivals do not wait);
    each answer counted on `progress`."""
    started_at = time.time()
    begins = time.perf_counter()
    answered = 0

    async def at(index: int, request: PreparedCheckout) -> Attempt:
        nonlocal answered
        await asyncio.sleep(max(0.0, begins + index / rate - time.perf_counter()))
        attempt = await _check_out(session, request)
        answered += 1
        if progress is not None:
            progress.update(answered)
        return attempt

    attempts = await asyncio.gather(*(at(i, r) for i, r in enumerate(prepared)))
    return Window(attempts=tuple(attempts), started_at=started_at, ended_at=time.time())


async def settled_outcomes(database_url: str, order_ids: Sequence[str]) -> list[Outcome]:
    """Wait (polling checkout's table) until no order is PENDING; return every outcome."""
    ids = [uuid.UUID(order_id) for order_id in order_ids]
    connection = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(SETTLE_WITHIN):
            # The database has no event to await here: poll it.
            while True:
                pending = await connection.fetchval(
                    "SELECT count(*) FROM checkout.orders WHERE order_id = ANY($1::uuid[])"
                    " AND status = 'PENDING'",
                    ids,
                )
                if not pending:
                    break
                await asyncio.sleep(0.1)
        # Confirmed when OrderPlaced was written (in ConfirmOrder's transaction): updated_at
        # moves on when the shipping consumer marks the order SHIPPED.
        rows = await connection.fetch(
            "SELECT o.order_id, o.status, o.failure_reason,"
            " coalesce(e.occurred_at, o.updated_at) AS settled_at"
            " FROM checkout.orders AS o LEFT JOIN checkout.outbox AS e"
            " ON e.aggregate_id = o.order_id::text AND e.event_type LIKE '%.OrderPlaced'"
            " WHERE o.order_id = ANY($1::uuid[])",
            ids,
        )
    finally:
        await connection.close()
    return [
        Outcome(
            order_id=str(row["order_id"]),
            status=row["status"],
            failure_reason=row["failure_reason"],
            settled_at=_epoch(row["settled_at"]),
        )
        for row in rows
    ]


async def pipeline_drained(database_url: str) -> float:
    """Wait (polling) until every outbox row is published and every consumer queue is empty
    (dead-letter queues aside): the relay and the consumers have done their part of the orders
    so far. Seconds waited; raises TimeoutError past SETTLE_WITHIN."""
    queues = [queue.name for queue in load_queue_definitions(REPO / DEFAULT_RULES_FILE)]
    started = time.monotonic()
    connection = await asyncpg.connect(database_url)
    try:
        schemas = [
            row["table_schema"]
            for row in await connection.fetch(
                "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox'"
            )
        ]
        unpublished = " + ".join(
            f'(SELECT count(*) FROM "{schema}".outbox WHERE published_at IS NULL)'
            for schema in schemas
        )
        async with asyncio.timeout(SETTLE_WITHIN):
            while True:
                busy = await connection.fetchval(
                    f"SELECT {unpublished or '0'} + (SELECT count(*) FROM queues.messages"
                    " WHERE queue = ANY($1::text[]))",
                    queues,
                )
                if not busy:
                    return time.monotonic() - started
                await asyncio.sleep(0.1)
    finally:
        await connection.close()


def _epoch(moment: datetime) -> float:
    return moment.timestamp()


async def _check_out(session: aiohttp.ClientSession, request: PreparedCheckout) -> Attempt:
    sent_at = time.time()
    begins = time.perf_counter()
    try:
        async with session.post("/v1/checkouts", data=request.body, headers=request.headers) as r:
            payload = await r.read()
            status = r.status
    except (aiohttp.ClientError, TimeoutError):
        seconds = time.perf_counter() - begins
        return Attempt(request=request, sent_at=sent_at, seconds=seconds, status=0, order_id=None)
    seconds = time.perf_counter() - begins
    order_id = orjson.loads(payload).get("order_id") if status == 202 else None
    return Attempt(
        request=request, sent_at=sent_at, seconds=seconds, status=status, order_id=order_id
    )


async def _retrying(
    request: Callable[[], AbstractAsyncContextManager[aiohttp.ClientResponse]], status: int
) -> dict[str, object]:
    """Setting up is not measured: a shed or timed-out call is retried a few times."""
    for attempt in range(PREPARE_ATTEMPTS):
        try:
            return await _expect(request(), status)
        except Unavailable:
            if attempt == PREPARE_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


class Unavailable(RuntimeError):
    """The gateway answered 502/503/504: worth another try."""


async def _expect(
    request: AbstractAsyncContextManager[aiohttp.ClientResponse], status: int
) -> dict[str, object]:
    async with request as response:
        payload = await response.read()
        if response.status in (502, 503, 504):
            raise Unavailable(f"{response.method} {response.url}: {response.status} {payload!r}")
        if response.status != status:
            raise RuntimeError(f"{response.method} {response.url}: {response.status} {payload!r}")
        decoded: dict[str, object] = orjson.loads(payload)
        return decoded
