"""The HTTP gateway on a real uvicorn (httptools) against a real inventory gRPC server, real
PostgreSQL and real Redis: admin inventory routes, auth, bad input, request ids and their
propagation, problem details, deadlines from the request budget, load shedding, throttling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import pytest
import uvicorn

from gateway.app import OPENAPI_PATH, build_app
from gateway.auth import ADMIN_SCOPE, issue_token
from gateway.settings import GatewaySettings
from gateway.throttle import Throttle, take_token
from local_supervisor.embedded import free_port
from marketplace_platform.grpc_server import RunningServer
from marketplace_platform.request_context import request_id_var
from tests.support.polling import eventually
from tests.support.processes import python_module
from tests.support.servers import ServiceServers

SECRET = "integration-test-secret-0123456789abcdef"
WITHIN = 10.0  # seconds any awaited condition may take before the test fails
PROCESS_START_WITHIN = 90.0  # a cold `python -m gateway` on a busy 2-core machine is slow


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def cart_server(grpc_servers: ServiceServers, redis_server_url: str) -> RunningServer:
    return await grpc_servers.cart(redis_url=redis_server_url)


@pytest.fixture(scope="module")
async def payment_server(grpc_servers: ServiceServers) -> RunningServer:
    # orders here never reach authorization, so no PSP is needed behind it
    return await grpc_servers.payment(psp_url=f"http://127.0.0.1:{free_port()}")


@dataclass
class Gateway:
    """A gateway served by uvicorn on a free port in this process."""

    url: str
    settings: GatewaySettings

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=WITHIN)


@contextlib.asynccontextmanager
async def running_gateway(settings: GatewaySettings) -> AsyncIterator[Gateway]:
    """Serve the gateway (lifespan and all) on uvicorn + httptools until the block ends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(settings), http="httptools", lifespan="on", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await eventually(lambda: _started(server, task), what="uvicorn has started", interval=0.01)
    try:
        yield Gateway(url=f"http://127.0.0.1:{port}", settings=settings)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _started(server: uvicorn.Server, task: asyncio.Task[None]) -> bool:
    if task.done():
        task.result()
        raise AssertionError("uvicorn stopped before it started")
    return server.started


def gateway_settings(inventory_port: int, redis_url: str, **overrides: Any) -> GatewaySettings:
    unused = f"127.0.0.1:{free_port()}"  # where a test needs no cart or checkout
    values: dict[str, Any] = {
        "gateway_jwt_secret": SECRET,
        "redis_url": redis_url,
        "inventory_target": f"127.0.0.1:{inventory_port}",
        "cart_target": unused,
        "checkout_target": unused,
        "gateway_burst": 10_000,
        "gateway_rate_per_second": 10_000,
        **overrides,
    }
    return GatewaySettings(**values)


@pytest.fixture(scope="module")
async def gateway(
    inventory_server: RunningServer,
    cart_server: RunningServer,
    checkout_server: RunningServer,
    redis_server_url: str,
) -> AsyncIterator[Gateway]:
    settings = gateway_settings(
        inventory_server.port,
        redis_server_url,
        cart_target=f"127.0.0.1:{cart_server.port}",
        checkout_target=f"127.0.0.1:{checkout_server.port}",
    )
    async with running_gateway(settings) as gw:
        yield gw


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with gateway.client() as client:
        yield client


def bearer(
    subject: str | None = None, *scopes: str, secret: str = SECRET, ttl: float = 600
) -> dict[str, str]:
    token = issue_token(
        secret=secret,
        subject=subject or f"c-{uuid.uuid4().hex[:10]}",
        scopes=scopes,
        ttl_seconds=ttl,
    )
    return {"Authorization": f"Bearer {token}"}


def admin() -> dict[str, str]:
    return bearer(None, ADMIN_SCOPE)


def fresh_sku() -> str:
    return f"GW-{uuid.uuid4().hex[:12]}"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"]
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    assert "Traceback" not in response.text
    return body


# -- admin inventory routes -----------------------------------------------------------------


async def test_admin_sets_and_reads_stock(http: httpx.AsyncClient) -> None:
    sku = fresh_sku()
    put = await http.put(f"/v1/admin/inventory/{sku}", json={"on_hand": 7}, headers=admin())
    assert put.status_code == 200, put.text
    assert put.headers["content-type"] == "application/json"
    assert put.json() == {"sku": sku, "on_hand": 7, "reserved": 0, "available": 7}
    got = await http.get(f"/v1/admin/inventory/{sku}", headers=admin())
    assert got.status_code == 200
    assert got.json() == {"sku": sku, "on_hand": 7, "reserved": 0, "available": 7}
    again = await http.put(f"/v1/admin/inventory/{sku}", json={"on_hand": 3}, headers=admin())
    assert again.json()["on_hand"] == 3


async def test_unknown_sku_is_404_problem(http: httpx.AsyncClient) -> None:
    body = assert_problem(
        await http.get(f"/v1/admin/inventory/{fresh_sku()}", headers=admin()), 404
    )
    assert body["type"] == "/problems/not-found"


# -- bad input ------------------------------------------------------------------------------


async def test_a_contract_rule_broken_is_400_naming_the_field(http: httpx.AsyncClient) -> None:
    response = await http.put(
        f"/v1/admin/inventory/{fresh_sku()}", json={"on_hand": -1}, headers=admin()
    )
    body = assert_problem(response, 400)
    assert [e["field"] for e in body["errors"]] == ["on_hand"]


async def test_a_bad_path_parameter_is_400_naming_it(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/admin/inventory/-starts-with-a-dash", headers=admin())
    body = assert_problem(response, 400)
    assert [e["field"] for e in body["errors"]] == ["sku"]


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"on_hand": "7"}', "on_hand"),  # a string is not an integer, however it reads
        (b'{"on_hand": 7.5}', "on_hand"),
        (b'{"on_hand": 99999999999999999999999}', "on_hand"),  # beyond int64
        (b"{}", "on_hand"),
        (b"[7]", "(body)"),
        (b"{not json", "(body)"),
    ],
)
async def test_a_body_of_the_wrong_shape_is_400_naming_the_field(
    http: httpx.AsyncClient, content: bytes, field: str
) -> None:
    response = await http.put(
        f"/v1/admin/inventory/{fresh_sku()}",
        content=content,
        headers={**admin(), "content-type": "application/json"},
    )
    body = assert_problem(response, 400)
    assert field in [e["field"] for e in body["errors"]]


async def test_a_body_over_the_limit_is_413(http: httpx.AsyncClient, gateway: Gateway) -> None:
    oversized = b'{"on_hand": 1, "pad": "' + b"x" * gateway.settings.gateway_max_body_bytes + b'"}'
    response = await http.put(
        f"/v1/admin/inventory/{fresh_sku()}", content=oversized, headers=admin()
    )
    assert_problem(response, 413)


async def test_unknown_route_and_wrong_method_are_problems(http: httpx.AsyncClient) -> None:
    assert_problem(await http.get("/v1/nothing-here", headers=admin()), 404)
    wrong = await http.delete(f"/v1/admin/inventory/{fresh_sku()}", headers=admin())
    assert_problem(wrong, 405)
    assert set(wrong.headers["allow"].replace(" ", "").split(",")) >= {"GET", "PUT"}


# -- auth -----------------------------------------------------------------------------------


async def test_no_token_is_401_with_a_bearer_challenge(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/v1/admin/inventory/{fresh_sku()}")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            bearer(None, ADMIN_SCOPE, secret="another-secret-0123456789abcdefghij"),
            id="bad-signature",
        ),
        pytest.param(bearer(None, ADMIN_SCOPE, ttl=-30), id="expired"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="not-bearer"),
        pytest.param({"Authorization": "Bearer not.a.jwt"}, id="malformed"),
    ],
)
async def test_unusable_tokens_are_401(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await http.get(f"/v1/admin/inventory/{fresh_sku()}", headers=headers)
    assert_problem(response, 401)


async def test_admin_routes_need_the_admin_scope(http: httpx.AsyncClient) -> None:
    sku = fresh_sku()
    customer = bearer(None, "orders")
    assert_problem(await http.get(f"/v1/admin/inventory/{sku}", headers=customer), 403)
    put = await http.put(f"/v1/admin/inventory/{sku}", json={"on_hand": 5}, headers=customer)
    assert_problem(put, 403)
    # nothing was set by the refused call
    assert_problem(await http.get(f"/v1/admin/inventory/{sku}", headers=admin()), 404)


async def test_checkout_and_cancel_need_an_idempotency_key(http: httpx.AsyncClient) -> None:
    checkout = await http.post(
        "/v1/checkouts",
        json={
            "cart_id": str(uuid.uuid4()),
            "payment_method": "pm_card_visa",
            "shipping_address": {
                "name": "A",
                "line1": "1 Road",
                "city": "Town",
                "postal_code": "1",
                "country": "US",
            },
        },
        headers=bearer(),
    )
    body = assert_problem(checkout, 400)
    assert body["errors"] == [{"field": "Idempotency-Key", "message": "required"}]
    cancel = await http.post(f"/v1/orders/{uuid.uuid4()}/cancel", json={}, headers=bearer())
    assert assert_problem(cancel, 400)["errors"][0]["field"] == "Idempotency-Key"


# -- request ids ----------------------------------------------------------------------------


async def test_every_response_carries_a_request_id(http: httpx.AsyncClient) -> None:
    responses = [
        await http.get("/healthz"),
        await http.get("/openapi.json"),
        await http.get(f"/v1/admin/inventory/{fresh_sku()}"),  # 401
        await http.get(f"/v1/admin/inventory/{fresh_sku()}", headers=admin()),  # 404
        await http.get("/nowhere"),  # 404 without a route
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


async def test_a_clients_request_id_is_echoed_and_reaches_the_service(
    http: httpx.AsyncClient,
) -> None:
    seen: list[str | None] = []

    class Capture(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            seen.append(request_id_var.get())
            return True

    boundary_log = logging.getLogger("marketplace_platform.interceptors")
    capture = Capture()
    boundary_log.addFilter(capture)
    previous = boundary_log.level
    boundary_log.setLevel(logging.INFO)
    try:
        request_id = f"client-{uuid.uuid4().hex}"
        response = await http.get(
            f"/v1/admin/inventory/{fresh_sku()}",
            headers={**admin(), "X-Request-Id": request_id},
        )
        assert response.status_code == 404
        assert response.headers["x-request-id"] == request_id
        # the inventory service logged its refusal under the same request id
        assert request_id in seen
    finally:
        boundary_log.removeFilter(capture)
        boundary_log.setLevel(previous)


async def test_an_unsafe_request_id_is_replaced(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz", headers={"X-Request-Id": "x" * 500})
    assert response.headers["x-request-id"] != "x" * 500
    assert len(response.headers["x-request-id"]) == 32


# -- documents and probes -------------------------------------------------------------------


async def test_openapi_is_served_exactly_as_kept_in_the_repository(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/openapi.json")
    assert response.status_code == 200
    assert response.content == OPENAPI_PATH.read_bytes()
    assert json.loads(response.content)["openapi"].startswith("3.1")


async def test_healthz_answers(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_when_every_upstream_serves(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


async def test_readyz_is_503_while_an_upstream_is_not_serving(
    inventory_server: RunningServer, redis_server_url: str
) -> None:
    # this gateway's cart and checkout targets are ports nobody listens on
    async with (
        running_gateway(gateway_settings(inventory_server.port, redis_server_url)) as gw,
        gw.client() as http,
    ):
        response = await http.get("/readyz")
    body = assert_problem(response, 503)
    assert int(response.headers["retry-after"]) >= 1
    assert "CartService" in body["detail"]
    assert "CheckoutService" in body["detail"]
    assert "InventoryService" not in body["detail"]


# -- deadlines and shedding -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def stock_row_locked(database_url: str, sku: str) -> AsyncIterator[asyncpg.Connection]:
    """Hold the SKU's stock row locked, as a long transaction elsewhere would."""
    connection = await asyncpg.connect(database_url)
    try:
        transaction = connection.transaction()
        await transaction.start()
        await connection.execute(
            "SELECT 1 FROM inventory.stock_items WHERE sku = $1 FOR UPDATE", sku
        )
        try:
            yield connection
        finally:
            await transaction.rollback()
    finally:
        await connection.close()


async def waiting_lock_requests(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        count: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        return count
    finally:
        await connection.close()


async def test_a_slow_upstream_is_cut_at_the_request_budget_with_503(
    inventory_server: RunningServer, redis_server_url: str, migrated_database_url: str
) -> None:
    settings = gateway_settings(
        inventory_server.port, redis_server_url, gateway_request_budget_seconds=0.5
    )
    sku = fresh_sku()
    async with running_gateway(settings) as gw, gw.client() as http:
        first = await http.put(f"/v1/admin/inventory/{sku}", json={"on_hand": 1}, headers=admin())
        assert first.status_code == 200
        async with stock_row_locked(migrated_database_url, sku):
            started = time.monotonic()
            response = await http.put(
                f"/v1/admin/inventory/{sku}", json={"on_hand": 2}, headers=admin()
            )
            took = time.monotonic() - started
        assert_problem(response, 503)
        assert int(response.headers["retry-after"]) >= 1
        assert 0.4 <= took < 2.0, took


async def test_past_the_concurrency_limit_requests_are_shed_at_once(
    inventory_server: RunningServer, redis_server_url: str, migrated_database_url: str
) -> None:
    settings = gateway_settings(
        inventory_server.port,
        redis_server_url,
        gateway_max_concurrent_requests=2,
        gateway_request_budget_seconds=WITHIN,
    )
    sku = fresh_sku()
    async with running_gateway(settings) as gw, gw.client() as http:
        assert (
            await http.put(f"/v1/admin/inventory/{sku}", json={"on_hand": 1}, headers=admin())
        ).status_code == 200
        async with stock_row_locked(migrated_database_url, sku):
            held = [
                asyncio.create_task(
                    http.put(f"/v1/admin/inventory/{sku}", json={"on_hand": n}, headers=admin())
                )
                for n in (2, 3)
            ]
            await eventually(
                lambda: _equals(waiting_lock_requests(migrated_database_url), 2),
                what="both requests wait on the locked row",
                interval=0.01,
            )
            started = time.monotonic()
            shed = await http.get(f"/v1/admin/inventory/{sku}", headers=admin())
            assert time.monotonic() - started < 1.0  # answered at once, not queued
            assert_problem(shed, 503)
            assert int(shed.headers["retry-after"]) >= 1
            assert (await http.get("/healthz")).status_code == 200  # liveness is never shed
        finished = await asyncio.gather(*held)
        assert [r.status_code for r in finished] == [200, 200]
        after = await http.get(f"/v1/admin/inventory/{sku}", headers=admin())
        assert after.status_code == 200


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


# -- throttling -----------------------------------------------------------------------------


async def test_past_the_rate_a_customer_gets_429_with_retry_after(
    inventory_server: RunningServer, redis_server_url: str
) -> None:
    settings = gateway_settings(
        inventory_server.port, redis_server_url, gateway_rate_per_second=0.5, gateway_burst=3
    )
    sku = fresh_sku()
    throttled = bearer(None, ADMIN_SCOPE)
    async with running_gateway(settings) as gw, gw.client() as http:
        statuses = [
            (await http.get(f"/v1/admin/inventory/{sku}", headers=throttled)).status_code
            for _ in range(3)
        ]
        assert statuses == [404, 404, 404]  # through to the service (the SKU is unknown)
        refused = await http.get(f"/v1/admin/inventory/{sku}", headers=throttled)
        assert_problem(refused, 429)
        assert refused.headers["retry-after"] == "2"  # one token at 0.5/s
        # another customer has a bucket of their own
        other = await http.get(f"/v1/admin/inventory/{sku}", headers=admin())
        assert other.status_code == 404


async def test_racing_requests_never_spend_more_than_the_burst(
    inventory_server: RunningServer, redis_server_url: str
) -> None:
    burst = 5
    # A generous Redis timeout: on a loaded machine a burst of new connections can take longer
    # than the default, and a throttle that fails open would let more through by design.
    settings = gateway_settings(
        inventory_server.port,
        redis_server_url,
        gateway_rate_per_second=0.01,
        gateway_burst=burst,
        gateway_redis_timeout_seconds=10.0,
    )
    racer = bearer(None, ADMIN_SCOPE)
    async with running_gateway(settings) as gw, gw.client() as http:
        responses = await asyncio.gather(
            *(http.get(f"/v1/admin/inventory/{fresh_sku()}", headers=racer) for _ in range(40))
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(404) == burst, statuses
    assert statuses.count(429) == 40 - burst, statuses


async def test_throttling_fails_open_when_redis_is_down(
    inventory_server: RunningServer,
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    settings = gateway_settings(
        inventory_server.port, nowhere, gateway_rate_per_second=0.01, gateway_burst=1
    )
    customer = bearer(None, ADMIN_SCOPE)
    async with running_gateway(settings) as gw, gw.client() as http:
        statuses = [
            (await http.get(f"/v1/admin/inventory/{fresh_sku()}", headers=customer)).status_code
            for _ in range(3)
        ]
    assert statuses == [404, 404, 404]  # a bucket of 1 would have refused the 2nd and 3rd


async def test_the_redis_script_does_the_same_arithmetic_as_take_token(
    redis_server_url: str,
) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(redis_server_url)
    try:
        throttle = Throttle(client, rate_per_second=2.5, burst=4, timeout_seconds=1.0)
        customer = f"lua-{uuid.uuid4().hex}"
        bucket = None
        now = 1_700_000_000_000
        for step_ms in [0, 0, 0, 0, 0, 0, 100, 300, 399, 1, 5000, 0, 0, 0, 0, 0, 50]:
            now += step_ms
            expected, bucket = take_token(bucket, now_ms=now, rate_per_second=2.5, burst=4)
            got = await throttle.take(customer, now_ms=now)
            assert got == expected, (now, got, expected)
    finally:
        await client.aclose()


# -- carts and checkouts, through real cart and checkout services ---------------------------


ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "12 St James's Square",
    "city": "London",
    "postal_code": "SW1Y 4JH",
    "country": "GB",
}


async def stocked_product(http: httpx.AsyncClient, price_minor: int = 1250) -> str:
    sku = fresh_sku()
    product = await http.put(
        f"/v1/admin/products/{sku}",
        json={"name": "Mug", "price": {"amount_minor": price_minor, "currency": "USD"}},
        headers=admin(),
    )
    assert product.status_code == 200, product.text
    assert product.json() == {
        "sku": sku,
        "name": "Mug",
        "price": {"amount_minor": price_minor, "currency": "USD"},
        "merchant_id": "default",
        "listed": True,
    }
    stock = await http.put(f"/v1/admin/inventory/{sku}", json={"on_hand": 10}, headers=admin())
    assert stock.status_code == 200
    return sku


async def filled_cart(http: httpx.AsyncClient, customer: dict[str, str], sku: str) -> str:
    created = await http.post("/v1/carts", json={}, headers=customer)
    assert created.status_code == 201, created.text
    cart_id: str = created.json()["cart_id"]
    assert created.headers["location"] == f"/v1/carts/{cart_id}"
    filled = await http.put(
        f"/v1/carts/{cart_id}/items/{sku}", json={"quantity": 2}, headers=customer
    )
    assert filled.status_code == 200, filled.text
    return cart_id


async def test_a_customer_builds_a_cart(http: httpx.AsyncClient) -> None:
    sku = await stocked_product(http, price_minor=1250)
    customer_id = f"c-{uuid.uuid4().hex[:10]}"
    customer = bearer(customer_id)
    created = await http.post("/v1/carts", headers=customer)  # no body at all is {} too
    assert created.status_code == 201, created.text
    cart = created.json()
    assert cart["customer_id"] == customer_id
    assert cart["lines"] == []
    cart_id = cart["cart_id"]

    put = await http.put(f"/v1/carts/{cart_id}/items/{sku}", json={"quantity": 3}, headers=customer)
    assert put.status_code == 200, put.text
    assert put.json()["lines"] == [
        {
            "sku": sku,
            "quantity": 3,
            "unit_price": {"amount_minor": 1250, "currency": "USD"},
            "line_total": {"amount_minor": 3750, "currency": "USD"},
        }
    ]
    assert put.json()["subtotal"] == {"amount_minor": 3750, "currency": "USD"}
    version = put.json()["version"]

    got = await http.get(f"/v1/carts/{cart_id}", headers=customer)
    assert got.json() == put.json()

    stale = await http.put(
        f"/v1/carts/{cart_id}/items/{sku}",
        json={"quantity": 1},
        headers={**customer, "If-Match": f'"{version - 1}"'},
    )
    assert assert_problem(stale, 409)["type"] == "/problems/version-conflict"

    removed = await http.delete(
        f"/v1/carts/{cart_id}/items/{sku}", headers={**customer, "If-Match": str(version)}
    )
    assert removed.status_code == 200, removed.text
    assert removed.json()["lines"] == []
    assert removed.json()["version"] == version + 1


async def test_a_quantity_out_of_range_is_400_naming_quantity(http: httpx.AsyncClient) -> None:
    sku = await stocked_product(http)
    customer = bearer()
    cart_id = (await http.post("/v1/carts", json={}, headers=customer)).json()["cart_id"]
    response = await http.put(
        f"/v1/carts/{cart_id}/items/{sku}", json={"quantity": 0}, headers=customer
    )
    assert [e["field"] for e in assert_problem(response, 400)["errors"]] == ["quantity"]


async def test_another_customers_cart_and_order_are_404(http: httpx.AsyncClient) -> None:
    sku = await stocked_product(http)
    owner, stranger = bearer(), bearer()
    cart_id = await filled_cart(http, owner, sku)
    placed = await http.post(
        "/v1/checkouts",
        json={"cart_id": cart_id, "payment_method": "pm_card_visa", "shipping_address": ADDRESS},
        headers={**owner, "Idempotency-Key": f"key-{uuid.uuid4().hex}"},
    )
    assert placed.status_code == 202, placed.text
    order_id = placed.json()["order_id"]

    assert_problem(await http.get(f"/v1/carts/{cart_id}", headers=stranger), 404)
    stranger_put = await http.put(
        f"/v1/carts/{cart_id}/items/{sku}", json={"quantity": 1}, headers=stranger
    )
    assert_problem(stranger_put, 404)
    assert_problem(await http.get(f"/v1/orders/{order_id}", headers=stranger), 404)
    cancel = await http.post(
        f"/v1/orders/{order_id}/cancel",
        json={},
        headers={**stranger, "Idempotency-Key": f"key-{uuid.uuid4().hex}"},
    )
    assert_problem(cancel, 404)
    # and the owner still sees both, untouched
    assert (await http.get(f"/v1/carts/{cart_id}", headers=owner)).status_code == 200
    order = await http.get(f"/v1/orders/{order_id}", headers=owner)
    assert order.json()["status"] == "PENDING"


async def test_a_checkout_is_accepted_and_its_replay_is_the_same_order(
    http: httpx.AsyncClient,
) -> None:
    sku = await stocked_product(http, price_minor=1000)
    customer = bearer()
    cart_id = await filled_cart(http, customer, sku)
    body = {"cart_id": cart_id, "payment_method": "pm_card_visa", "shipping_address": ADDRESS}
    key = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}

    first = await http.post("/v1/checkouts", json=body, headers={**customer, **key})
    assert first.status_code == 202, first.text
    order_id = first.json()["order_id"]
    assert first.json() == {"order_id": order_id, "status": "PENDING"}
    assert first.headers["location"] == f"/v1/orders/{order_id}"
    assert "idempotent-replayed" not in first.headers

    replay = await http.post("/v1/checkouts", json=body, headers={**customer, **key})
    assert replay.status_code == 202
    assert replay.json() == first.json()
    assert replay.headers["idempotent-replayed"] == "true"

    changed = {**body, "payment_method": "pm_card_chargeDeclined"}
    mismatch = await http.post("/v1/checkouts", json=changed, headers={**customer, **key})
    assert_problem(mismatch, 422)

    order = await http.get(f"/v1/orders/{order_id}", headers=customer)
    assert order.status_code == 200, order.text
    document = order.json()
    assert document["order_id"] == order_id
    assert document["status"] == "PENDING"
    assert document["failure_reason"] is None
    assert document["subtotal"] == {"amount_minor": 2000, "currency": "USD"}
    assert [(line["sku"], line["quantity"]) for line in document["lines"]] == [(sku, 2)]


async def test_prefer_wait_holds_the_answer_for_the_wait_beyond_the_budget_and_says_so(
    http: httpx.AsyncClient, gateway: Gateway
) -> None:
    # No saga runs in this module: the order stays PENDING, so every wait runs its course.
    sku = await stocked_product(http, price_minor=1000)
    customer = bearer()
    cart_id = await filled_cart(http, customer, sku)
    body = {"cart_id": cart_id, "payment_method": "pm_card_visa", "shipping_address": ADDRESS}
    key = {"Idempotency-Key": f"key-{uuid.uuid4().hex}"}

    started = time.monotonic()
    first = await http.post(
        "/v1/checkouts", json=body, headers={**customer, **key, "Prefer": "respond-async, wait=1"}
    )
    assert first.status_code == 202, first.text
    assert time.monotonic() - started >= 1.0
    assert first.headers["preference-applied"] == "wait=1"
    order = first.json()  # the order as it stands, not only its id
    assert (order["status"], order["subtotal"]["amount_minor"]) == ("PENDING", 2000)
    order_id = order["order_id"]
    assert first.headers["location"] == f"/v1/orders/{order_id}"

    # A replay waits too, and longer than the request budget (the wait is added to it).
    wait = int(gateway.settings.gateway_request_budget_seconds) + 1
    started = time.monotonic()
    replay = await http.post(
        "/v1/checkouts", json=body, headers={**customer, **key, "Prefer": f"wait={wait}"}
    )
    assert replay.status_code == 202, replay.text
    assert time.monotonic() - started >= wait
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["preference-applied"] == f"wait={wait}"
    assert replay.json()["order_id"] == order_id

    started = time.monotonic()
    read = await http.get(f"/v1/orders/{order_id}", headers={**customer, "Prefer": "wait=1"})
    assert read.status_code == 200, read.text
    assert time.monotonic() - started >= 1.0
    assert (read.json()["status"], read.headers["preference-applied"]) == ("PENDING", "wait=1")

    # A malformed or unknown preference is ignored: answered at once, as without the header.
    for prefer in ("wait=soon", "wait=1.5", "handling=strict", "wait=0"):
        started = time.monotonic()
        plain = await http.get(f"/v1/orders/{order_id}", headers={**customer, "Prefer": prefer})
        assert plain.status_code == 200, plain.text
        assert "preference-applied" not in plain.headers
        assert time.monotonic() - started < 1.0
    replay = await http.post("/v1/checkouts", json=body, headers={**customer, **key, "Prefer": "x"})
    assert (replay.status_code, replay.json()) == (202, {"order_id": order_id, "status": "PENDING"})
    assert "preference-applied" not in replay.headers


async def test_a_customer_cancels_a_pending_order(http: httpx.AsyncClient) -> None:
    sku = await stocked_product(http)
    customer = bearer()
    cart_id = await filled_cart(http, customer, sku)
    placed = await http.post(
        "/v1/checkouts",
        json={"cart_id": cart_id, "payment_method": "pm_card_visa", "shipping_address": ADDRESS},
        headers={**customer, "Idempotency-Key": f"key-{uuid.uuid4().hex}"},
    )
    order_id = placed.json()["order_id"]
    cancel = await http.post(
        f"/v1/orders/{order_id}/cancel",
        json={},
        headers={**customer, "Idempotency-Key": f"key-{uuid.uuid4().hex}"},
    )
    assert cancel.status_code == 202, cancel.text
    assert cancel.json()["order_id"] == order_id
    assert cancel.json()["status"] in {"PENDING", "CANCELLED"}


async def test_a_checkout_with_bad_fields_is_400_naming_them(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/checkouts",
        json={
            "cart_id": "not-a-uuid",
            "payment_method": "pm card",
            "shipping_address": {**ADDRESS, "country": "gb"},
        },
        headers={**bearer(), "Idempotency-Key": "short"},
    )
    fields = {e["field"] for e in assert_problem(response, 400)["errors"]}
    assert fields == {"Idempotency-Key", "cart_id", "payment_method", "shipping_address.country"}


# -- the OpenAPI document against the running gateway ---------------------------------------

SCHEMATHESIS_CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "ignored_auth",
    ]
)


async def test_schemathesis_finds_no_5xx_and_every_response_conforms(
    gateway: Gateway, tmp_path: Path
) -> None:
    report = tmp_path / "report"
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{gateway.url}/openapi.json",
        "--checks",
        SCHEMATHESIS_CHECKS,
        "--header",
        f"Authorization: {admin()['Authorization']}",
        "--max-examples",
        "5",
        "--phases",
        "coverage,fuzzing",
        "--seed",
        "7",
        "--workers",  # more workers trip a thread-safety bug of ast.parse on Python 3.11
        "1",
        "--report-dir",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""},
    )
    output, _ = await process.communicate()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "No issues found" in text or "passed" in text, text


# -- the process --------------------------------------------------------------------------


async def test_python_m_gateway_serves_and_stops_cleanly_on_sigterm(redis_server_url: str) -> None:
    port = free_port()
    env = {**os.environ, "GATEWAY_PORT": str(port), "REDIS_URL": redis_server_url}
    env.pop("GATEWAY_JWT_SECRET", None)
    async with python_module(
        "gateway", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    ) as process:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1.0) as http:

            async def healthy() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(
                healthy,
                what="python -m gateway answers /healthz",
                within=PROCESS_START_WITHIN,
                interval=0.01,
            )
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WITHIN):
            output, _ = await process.communicate()
    assert process.returncode == 0
    # with the development secret, the log offers a ready-to-paste call
    assert b"try it: curl -s -X POST" in output


async def test_production_refuses_to_start_with_the_development_secret() -> None:
    env = {**os.environ, "APP_ENV": "production", "REDIS_URL": "redis://cache.internal:6379/0"}
    env.pop("GATEWAY_JWT_SECRET", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(PROCESS_START_WITHIN):
        output, _ = await process.communicate()
    assert process.returncode != 0
    assert b"GATEWAY_JWT_SECRET" in output
