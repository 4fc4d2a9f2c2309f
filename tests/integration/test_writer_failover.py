"""A service process on an endpoint that follows the writer (marketplace_platform.db), against
real PostgreSQL servers of its own (verification.replica): its health goes NOT_SERVING while no
writer can be reached and SERVING again once one can, and its pool, which held connections to
the lost server, writes again without a restart: after the only server was killed and started
again (crash recovery), and after the primary was killed and its standby promoted (a standby
answers, but is no writer). Also, in this process: a unit of work that loses the writer raises
DependencyUnavailable, and a server that turns read-only under a pool is never written to."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import text

from local_supervisor.embedded import free_port
from marketplace.common.v1 import ids_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as inventory_pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from marketplace_platform.db import NoWriter, create_engine, ping, unit_of_work_factory, writer_lost
from marketplace_platform.errors import DependencyUnavailable
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.settings import ServiceSettings
from services.inventory.adapters.tables import outbox
from tests.support.processes import python_module
from verification.replica import ReplicaPair, replica_pair

pytestmark = pytest.mark.timeout(120)

WITHIN = 30.0
DATABASE = "marketplace"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@asynccontextmanager
async def inventory_on(pair: ReplicaPair, log: Path) -> AsyncIterator[str]:
    """The inventory service as a real process on the pair's writer endpoint; its target."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {
        "DATABASE_URL": pair.writer_url(DATABASE),
        "GRPC_PORT": str(port),
        "HEALTH_PROBE_INTERVAL_SECONDS": "0.2",
        "HEALTH_PROBE_TIMEOUT_SECONDS": "1",
        "RESERVATION_SWEEP_INTERVAL_SECONDS": "0.5",  # background writes through the outage
    }
    with log.open("wb") as output:
        async with python_module(
            "services.inventory", env=env, stdout=output.fileno(), stderr=output.fileno()
        ):
            target = f"127.0.0.1:{port}"
            await health_becomes(target, SERVING, log)
            yield target


async def health_becomes(target: str, wanted: int, log: Path) -> None:
    """Wait until the server's overall health and the service's own name report `wanted`."""
    names = ("", "marketplace.inventory.v1.InventoryService")
    try:
        async with asyncio.timeout(WITHIN), grpc.aio.insecure_channel(target) as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            while True:
                statuses = []
                for name in names:
                    try:
                        request = health_pb2.HealthCheckRequest(service=name)
                        statuses.append((await stub.Check(request, timeout=1)).status)
                    except grpc.aio.AioRpcError:
                        statuses.append(None)
                if all(status == wanted for status in statuses):
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"health never {wanted}; the service's log:\n{tail(log)}") from None


def tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


async def set_stock(target: str, sku: str, on_hand: int) -> int:
    """SetStock, retried while the service answers UNAVAILABLE; the on-hand it answered."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inventory_grpc.InventoryServiceStub(channel)
        request = inventory_pb.SetStockRequest(
            idempotency_key=f"set-{uuid.uuid4().hex}", sku=ids_pb2.Sku(value=sku), on_hand=on_hand
        )
        async with asyncio.timeout(WITHIN):
            while True:
                try:
                    return int((await stub.SetStock(request, timeout=5)).stock_level.on_hand)
                except grpc.aio.AioRpcError as error:
                    if error.code() is not grpc.StatusCode.UNAVAILABLE:
                        raise
                    await asyncio.sleep(0.1)


async def get_stock(target: str, sku: str) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = inventory_grpc.InventoryServiceStub(channel)
        response = await stub.GetStock(
            inventory_pb.GetStockRequest(sku=ids_pb2.Sku(value=sku)), timeout=5
        )
        return int(response.stock_level.on_hand)


async def test_the_only_server_killed_and_restarted(tmp_path: Path) -> None:
    async with replica_pair(standby=False) as pair:
        await pair.create_database(DATABASE)
        async with inventory_on(pair, tmp_path / "inventory.log") as target:
            assert await set_stock(target, "SKU-CRASH", 5) == 5

            pair.primary.kill()
            await health_becomes(target, NOT_SERVING, tmp_path / "inventory.log")
            await pair.primary.start()  # crash recovery
            await health_becomes(target, SERVING, tmp_path / "inventory.log")

            assert await get_stock(target, "SKU-CRASH") == 5  # acknowledged, kept
            assert await set_stock(target, "SKU-CRASH", 7) == 7


async def test_the_primary_killed_and_its_standby_promoted(tmp_path: Path) -> None:
    async with replica_pair(synchronous=True) as pair:
        await pair.create_database(DATABASE)
        async with inventory_on(pair, tmp_path / "inventory.log") as target:
            assert await set_stock(target, "SKU-FAILOVER", 5) == 5

            pair.primary.kill()
            # The standby still answers, read-only: the service must not call that a writer.
            await health_becomes(target, NOT_SERVING, tmp_path / "inventory.log")
            await asyncio.sleep(1.0)
            await health_becomes(target, NOT_SERVING, tmp_path / "inventory.log")
            assert pair.standby is not None
            await pair.standby.promote()
            await health_becomes(target, SERVING, tmp_path / "inventory.log")

            assert await get_stock(target, "SKU-FAILOVER") == 5  # synchronous: nothing lost
            assert await set_stock(target, "SKU-FAILOVER", 9) == 9


async def test_a_unit_of_work_without_a_writer_is_unavailable() -> None:
    async with replica_pair(synchronous=True) as pair:
        await pair.create_database(DATABASE)
        engine = create_engine(ServiceSettings(database_url=pair.writer_url(DATABASE)))
        uow = unit_of_work_factory(engine, OutboxWriter(outbox, producer="test"))()
        try:
            async with uow:
                await uow.session.execute(text("CREATE TABLE marks (n int)"))
            await ping(engine)
            await pair.wait_replayed()  # so the standby answers as a standby, not "no table"

            pair.primary.kill()
            with pytest.raises(DependencyUnavailable) as lost:
                async with uow:
                    await uow.session.execute(text("INSERT INTO marks VALUES (1)"))
            assert writer_lost(lost.value)
            with pytest.raises(NoWriter):  # the standby answers, but is no writer
                await ping(engine)

            assert pair.standby is not None
            await pair.standby.promote()
            async with asyncio.timeout(WITHIN):
                while True:
                    try:
                        await ping(engine)
                        break
                    except NoWriter:
                        await asyncio.sleep(0.1)
            async with uow:
                await uow.session.execute(text("INSERT INTO marks VALUES (2)"))
        finally:
            await engine.dispose()


async def test_a_server_turned_read_only_is_not_written_to_again() -> None:
    async with replica_pair(standby=False) as pair:
        await pair.create_database(DATABASE)
        engine = create_engine(ServiceSettings(database_url=pair.writer_url(DATABASE)))
        uow = unit_of_work_factory(engine, OutboxWriter(outbox, producer="test"))()
        admin = await asyncpg.connect(pair.primary.url(DATABASE))
        try:
            await admin.execute("CREATE TABLE marks (n int)")
            async with uow:  # the pool holds a connection to the writer
                await uow.session.execute(text("INSERT INTO marks VALUES (1)"))
            await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await admin.execute("SELECT pg_reload_conf()")
            await asyncio.sleep(0.5)
            with pytest.raises(DependencyUnavailable):  # 25006: the pool is dropped
                async with uow:
                    await uow.session.execute(text("INSERT INTO marks VALUES (2)"))
            with pytest.raises(NoWriter):
                await ping(engine)
            await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await admin.execute("SELECT pg_reload_conf()")
            await asyncio.sleep(0.5)
            async with asyncio.timeout(WITHIN):
                while True:
                    try:
                        await ping(engine)
                        break
                    except NoWriter:
                        await asyncio.sleep(0.1)
            async with uow:
                await uow.session.execute(text("INSERT INTO marks VALUES (3)"))
            assert await admin.fetchval("SELECT array_agg(n ORDER BY n) FROM marks") == [1, 3]
        finally:
            await admin.close()
            await engine.dispose()
