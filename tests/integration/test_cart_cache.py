"""The cart cache against Redis that stops, freezes or was never there: every cart operation
keeps working from PostgreSQL and reports the cache degraded, and no read returns a stale cart
once Redis is back (neither from a write whose invalidation could not reach Redis, nor from a
reader that loaded an old cart while a writer invalidated)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
import redis.asyncio as redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from local_supervisor.embedded import free_port, redis_server_argv
from local_supervisor.embedded import redis_url as url_for_port
from marketplace.cart.v1 import cart_service_pb2 as pb
from marketplace.common.v1 import ids_pb2
from marketplace_platform.grpc_server import NOT_SERVING, SERVING
from marketplace_platform.ids import new_id
from services.cart import bootstrap as cart_service
from services.cart.adapters.cart_cache import RedisCartCache
from services.cart.adapters.tables import cache_invalidations
from services.cart.domain.cart import Cart, CartStatus
from tests.conftest import wait_for_redis
from tests.support.carts import (
    add_product,
    cache_health,
    cart_stub,
    customer,
    fresh_sku,
    get_cart,
    new_cart,
    running_cart,
    set_quantity,
)
from tests.support.grpc_probes import health_status
from tests.support.keys import idempotency_key as key
from tests.support.polling import until_equal

T = TypeVar("T")
SLOW = 2.0  # a call with Redis gone must still answer well within this


class OwnRedis:
    """A redis-server of this test's own, which it may stop, freeze and bring back with its data
    (append-only file, fsync on every write), unlike the shared one."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return url_for_port(self.port)

    def start(self) -> None:
        argv = redis_server_argv(self.data_dir, port=self.port, fsync_always=True)
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
        wait_for_redis(self.port)

    def stop(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def freeze(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.thaw()
        server.stop()


@pytest.fixture
async def raw(own_redis: OwnRedis) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url)
    yield client
    await client.aclose()


pytestmark = pytest.mark.engine(db_pool_size=20)


def entry_key(cart_id: str) -> str:
    return f"cart:v1:{cart_id}"


async def entry(raw: redis.Redis, cart_id: str) -> str:
    """What Redis holds for the cart, "" when nothing."""
    value = await raw.get(entry_key(cart_id))
    return value.decode() if isinstance(value, bytes) else (value or "")


async def owed(engine: AsyncEngine, cart_id: str) -> int:
    async with engine.connect() as connection:
        query = select(func.count()).where(cache_invalidations.c.cart_id == cart_id)
        return int((await connection.execute(query)).scalar_one())


async def timed(call: Awaitable[T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await call
    return result, time.perf_counter() - started


async def test_with_redis_unreachable_every_operation_works_and_the_cache_reports_degraded(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    dead = url_for_port(free_port())
    caplog.set_level(logging.WARNING, logger="services.cart.adapters.cart_cache")
    async with (
        running_cart(engine, dead, wait_for_cache=False) as running,
        cart_stub(running) as stub,
    ):
        sku = fresh_sku()
        _, took = await timed(add_product(stub, sku, 700))
        assert took < SLOW
        assert (await stub.GetProduct(pb.GetProductRequest(sku=ids_pb2.Sku(value=sku)))).product
        cart = await new_cart(stub, customer())
        for version, quantity in ((1, 2), (2, 5)):
            cart, took = await timed(set_quantity(stub, cart, sku, quantity, version))
            assert took < SLOW
            assert (await get_cart(stub, cart)).lines[0].quantity == quantity
        removed = await stub.RemoveItem(
            pb.RemoveItemRequest(
                idempotency_key=key(),
                cart_id=cart.cart_id,
                customer_id=cart.customer_id,
                sku=ids_pb2.Sku(value=sku),
                expected_version=3,
            )
        )
        assert (removed.cart.version, len(removed.cart.lines)) == (4, 0)
        cart = await set_quantity(stub, removed.cart, sku, 1, 4)
        priced = await stub.PriceCart(
            pb.PriceCartRequest(cart_id=cart.cart_id, customer_id=cart.customer_id)
        )
        assert priced.priced_cart.subtotal.amount_minor == 700
        order = ids_pb2.OrderId(value=str(new_id()))
        checked_out = await stub.MarkCheckedOut(
            pb.MarkCheckedOutRequest(
                idempotency_key=key(),
                cart_id=cart.cart_id,
                customer_id=cart.customer_id,
                order_id=order,
            )
        )
        assert checked_out.cart.status == pb.CART_STATUS_CHECKED_OUT
        assert (await get_cart(stub, cart)).version == 6

        address = f"127.0.0.1:{running.port}"
        assert await health_status(address, cart_service.SERVICE_NAME) == SERVING
        assert await cache_health(running) == NOT_SERVING
        assert await owed(engine, cart.cart_id.value) == 1  # remembered for when Redis is back
    down_logs = [r for r in caplog.records if "cart cache DOWN" in r.getMessage()]
    assert len(down_logs) == 1, [r.getMessage() for r in down_logs]


@pytest.mark.parametrize("outage", ["frozen", "stopped"])
async def test_a_write_during_an_outage_is_never_read_stale_once_redis_is_back(
    engine: AsyncEngine, own_redis: OwnRedis, raw: redis.Redis, outage: str
) -> None:
    async with running_cart(engine, own_redis.url) as running, cart_stub(running) as stub:
        sku = fresh_sku()
        await add_product(stub, sku)
        cart = await set_quantity(stub, await new_cart(stub, customer()), sku, 1, 1)
        assert (await get_cart(stub, cart)).version == 2
        assert (await entry(raw, cart.cart_id.value)).startswith("2|c|")  # what Redis holds
        await raw.set("sentinel", "kept")

        if outage == "frozen":
            own_redis.freeze()
        else:
            own_redis.stop()
        written, took = await timed(set_quantity(stub, cart, sku, 9, 2))
        assert took < SLOW
        assert (await get_cart(stub, cart)).version == 3
        await until_equal(lambda: cache_health(running), NOT_SERVING)
        if outage == "frozen":
            own_redis.thaw()
        else:
            own_redis.start()
            await raw.connection_pool.disconnect()  # its connections died with the old process
            assert await raw.get("sentinel") == b"kept"  # it came back with its old entries

        reads = []
        deadline = time.monotonic() + 10
        while await cache_health(running) != SERVING:
            reads.append(await get_cart(stub, cart))
            assert time.monotonic() < deadline
        for _ in range(20):  # the cache is trusted again: these come from Redis
            reads.append(await get_cart(stub, cart))

        assert {(r.version, r.lines[0].quantity) for r in reads} == {(3, 9)}
        assert (await entry(raw, cart.cart_id.value)).startswith("3|c|")
        assert await owed(engine, cart.cart_id.value) == 0
        assert written.version == 3


async def test_a_reader_that_loaded_an_old_cart_cannot_cache_it_after_a_write(
    own_redis: OwnRedis, raw: redis.Redis
) -> None:
    cache = RedisCartCache.from_url(own_redis.url, ttl_seconds=60, timeout_seconds=0.5)
    cache.begin_recovery()
    await cache.restored()
    old = Cart(
        cart_id=new_id(),
        customer_id="c-1",
        version=1,
        status=CartStatus.OPEN,
        lines=(),
        order_id=None,
        created_at=datetime.now(UTC),
        updated_at=datetime.now(UTC),
    )
    newer = replace(old, version=2)
    try:
        await cache.fill(old)
        assert await cache.read(old.cart_id) == old
        assert await cache.invalidate(old.cart_id, 2)  # a writer committed version 2
        assert await cache.read(old.cart_id) is None
        await cache.fill(old)  # a reader that loaded version 1 before the write comes late
        assert await cache.read(old.cart_id) is None
        await cache.fill(newer)
        assert await cache.read(old.cart_id) == newer
        await cache.fill(old)
        assert await cache.read(old.cart_id) == newer
        assert 0 < await raw.pttl(entry_key(str(old.cart_id))) <= 60_000
    finally:
        await cache.close()


async def test_an_instance_that_cannot_reach_redis_leaves_no_stale_cart_for_the_others(
    engine: AsyncEngine, own_redis: OwnRedis, raw: redis.Redis
) -> None:
    dead = url_for_port(free_port())
    async with (
        running_cart(engine, own_redis.url, cart_cache_sweep_seconds=3600) as first,
        cart_stub(first) as stub,
    ):
        sku = fresh_sku()
        await add_product(stub, sku)
        cart = await set_quantity(stub, await new_cart(stub, customer()), sku, 1, 1)
        assert (await get_cart(stub, cart)).version == 2  # cached by the first instance
    async with running_cart(engine, dead, wait_for_cache=False) as blind, cart_stub(blind) as stub:
        await set_quantity(stub, cart, sku, 4, 2)  # Redis never hears of version 3
    assert (await entry(raw, cart.cart_id.value)).startswith("2|c|")  # stale, left behind
    assert await owed(engine, cart.cart_id.value) == 1

    async with (
        running_cart(engine, own_redis.url, wait_for_cache=False) as restarted,
        cart_stub(restarted) as stub,
    ):
        reads = [await get_cart(stub, cart)]
        await until_equal(lambda: cache_health(restarted), SERVING)
        reads += [await get_cart(stub, cart) for _ in range(10)]
    assert {r.version for r in reads} == {3}
    assert await owed(engine, cart.cart_id.value) == 0


async def test_a_running_instance_pays_the_debts_another_instance_left(
    engine: AsyncEngine, own_redis: OwnRedis
) -> None:
    dead = url_for_port(free_port())
    async with running_cart(engine, own_redis.url) as sighted, cart_stub(sighted) as stub:
        sku = fresh_sku()
        await add_product(stub, sku)
        cart = await set_quantity(stub, await new_cart(stub, customer()), sku, 1, 1)
        assert (await get_cart(stub, cart)).version == 2
        async with (
            running_cart(engine, dead, wait_for_cache=False) as blind,
            cart_stub(blind) as blind_stub,
        ):
            await set_quantity(blind_stub, cart, sku, 4, 2)

        async def version() -> int:
            return (await get_cart(stub, cart)).version

        # Within the sweep interval (0.2 s here, CART_CACHE_SWEEP_SECONDS): see the README.
        await until_equal(version, 3, within=5)
        await until_equal(lambda: owed(engine, cart.cart_id.value), 0, within=5)
