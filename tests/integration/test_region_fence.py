"""The Region fence (marketplace_platform.fence) on real PostgreSQL: every table of every schema
has its trigger; a write from a session of another epoch is refused (INSERT, UPDATE, DELETE,
TRUNCATE) and one without the setting is not; a stale process's unit of work and gRPC calls are
Fenced / UNAVAILABLE and write nothing, its health is NOT_SERVING; after a raise an engine of
the new epoch writes; the epoch is never lowered; a raise waits for open writes of the old
epoch. The module has a database of its own: it raises the fence, which would fence every
other module's engines (epoch 1)."""

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
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from local_supervisor.embedded import free_port
from marketplace.common.v1 import ids_pb2
from marketplace.events.v1 import inventory_events_pb2
from marketplace.inventory.v1 import inventory_service_pb2 as inventory_pb
from marketplace.inventory.v1 import inventory_service_pb2_grpc as inventory_grpc
from marketplace_platform.db import Fenced, NoWriter, ping, unit_of_work_factory
from marketplace_platform.errors import DependencyUnavailable
from marketplace_platform.fence import EpochLowered, current_epoch, raise_epoch
from marketplace_platform.fence import main as fence_main
from marketplace_platform.grpc_server import NOT_SERVING, SERVING
from marketplace_platform.ids import new_id
from marketplace_platform.outbox import OutboxWriter
from services.inventory.adapters.tables import metadata as inventory_metadata
from services.inventory.adapters.tables import outbox
from services.inventory.adapters.unit_of_work import InventoryUnitOfWork
from services.inventory.domain.stock import StockLevel
from tests.support.database import MakeEngine, table_counts
from tests.support.grpc_probes import health_status
from tests.support.polling import eventually
from tests.support.processes import python_module
from tests.support.servers import ServiceServers

pytestmark = pytest.mark.own_database

SCHEMAS = {"cart", "checkout", "inventory", "payment", "saga", "queues", "consumers"}
# pg_trigger.tgtype bits: ROW (unset: once per statement), BEFORE, and the four events.
ROW, BEFORE, INSERT, DELETE, UPDATE, TRUNCATE = 1, 2, 4, 8, 16, 32
INVENTORY_TABLES = inventory_metadata.sorted_tables


@pytest.fixture
async def epoch(module_database_url: str) -> int:
    """The fence raised by one for the test: the epoch a current process writes as (one
    below is a stale Region's)."""
    return await raise_epoch(module_database_url, await current_epoch(module_database_url) + 1)


@asynccontextmanager
async def session(url: str, region_epoch: int | None) -> AsyncIterator[Any]:
    """A bare asyncpg connection, saying `region_epoch` as a process would (None: not at all,
    as psql or an operator)."""
    settings = {} if region_epoch is None else {"marketplace.region_epoch": str(region_epoch)}
    connection = await asyncpg.connect(url, server_settings=settings)
    try:
        yield connection
    finally:
        await connection.close()


async def write_stock_and_event(engine: AsyncEngine, sku: str) -> None:
    """Inventory's own unit of work: a stock level and an event, as its use cases write."""
    uow = unit_of_work_factory(
        engine, OutboxWriter(outbox, producer="inventory"), kind=InventoryUnitOfWork
    )()
    async with uow:
        await uow.stock.get_or_create_for_update(sku)
        await uow.stock.save(StockLevel(sku, on_hand=5))
        released = inventory_events_pb2.InventoryReleased(
            reservation_id=ids_pb2.ReservationId(value=str(new_id())),
            order_id=ids_pb2.OrderId(value=str(new_id())),
        )
        await uow.publish(released, aggregate_type="order", aggregate_id=sku)


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_every_table_of_every_schema_has_the_fence_trigger(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    """
                    SELECT n.nspname, c.relname, t.tgtype, t.tgenabled::text,
                           t.tgfoid::regprocedure::text
                    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    LEFT JOIN pg_trigger t ON t.tgrelid = c.oid AND t.tgname = 'region_fence'
                    WHERE c.relkind IN ('r', 'p')
                      AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'platform')
                      AND n.nspname NOT LIKE 'pg\\_%'
                    """
                )
            )
        ).all()
    assert {schema for schema, *_ in rows} >= SCHEMAS
    events = BEFORE | INSERT | DELETE | UPDATE | TRUNCATE
    unfenced = [
        f"{schema}.{table}"
        for schema, table, tgtype, enabled, function in rows
        if tgtype is None
        or tgtype & (ROW | events) != events
        or enabled != "O"
        or function != "platform.refuse_stale_region()"
    ]
    assert unfenced == [], "tables without the Region fence's trigger (call fence_tables_v1)"


async def test_the_trigger_refuses_every_kind_of_write_of_another_epoch(
    module_database_url: str, epoch: int
) -> None:
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    insert = "INSERT INTO inventory.stock_items (sku, on_hand) VALUES ($1, 1)"
    async with session(module_database_url, None) as operator:
        await operator.execute(insert, sku)  # no setting: not fenced
    writes = {
        "INSERT": (insert, f"{sku}-new"),
        "UPDATE": ("UPDATE inventory.stock_items SET on_hand = 2 WHERE sku = $1", sku),
        "DELETE": ("DELETE FROM inventory.stock_items WHERE sku = $1", sku),
        "TRUNCATE": ("TRUNCATE inventory.outbox",),
    }
    async with session(module_database_url, epoch - 1) as stale:
        for kind, (statement, *values) in writes.items():
            with pytest.raises(asyncpg.PostgresError) as refused:
                await stale.execute(statement, *values)
            assert refused.value.sqlstate == "MPF01", kind
            assert f"epoch {epoch - 1}, the fence is at epoch {epoch}" in str(refused.value)
        # Matching no row changes nothing, and is refused all the same: once per statement.
        with pytest.raises(asyncpg.PostgresError, match="fenced"):
            await stale.execute("DELETE FROM inventory.stock_items WHERE false")
        assert await stale.fetchval("SELECT count(*) FROM inventory.stock_items") >= 1  # reads
    async with session(module_database_url, epoch) as current:
        for statement, *values in writes.values():
            await current.execute(statement, *values)
        assert await current.fetchval("SELECT count(*) FROM inventory.outbox") == 0


async def test_a_stale_unit_of_work_is_fenced_writes_nothing_and_its_ping_fails(
    make_engine: MakeEngine, epoch: int
) -> None:
    stale, current = make_engine(region_epoch=epoch - 1), make_engine(region_epoch=epoch)
    before = await table_counts(current, *INVENTORY_TABLES)
    pid = await backend_pid(stale)

    with pytest.raises(Fenced, match=f"epoch {epoch - 1}, the fence is at epoch {epoch}") as lost:
        await write_stock_and_event(stale, f"SKU-{uuid.uuid4().hex[:8]}")
    assert isinstance(lost.value, DependencyUnavailable)
    assert await table_counts(current, *INVENTORY_TABLES) == before
    assert await backend_pid(stale) != pid  # the pool was dropped, not written through again
    with pytest.raises(Fenced) as probe:
        await ping(stale)
    assert isinstance(probe.value, NoWriter)

    await ping(current)
    await write_stock_and_event(current, sku := f"SKU-{uuid.uuid4().hex[:8]}")
    async with current.connect() as connection:
        on_hand = await connection.execute(
            text("SELECT on_hand FROM inventory.stock_items WHERE sku = :sku"), {"sku": sku}
        )
        assert on_hand.scalar_one() == 5


async def set_stock(port: int, sku: str) -> grpc.StatusCode:
    """SetStock on the server at `port`, once; the call's status code."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub: Any = inventory_grpc.InventoryServiceStub(channel)
        request = inventory_pb.SetStockRequest(
            idempotency_key=f"set-{uuid.uuid4().hex}", sku=ids_pb2.Sku(value=sku), on_hand=3
        )
        try:
            await stub.SetStock(request, timeout=5)
        except grpc.aio.AioRpcError as error:
            return error.code()
        return grpc.StatusCode.OK


async def test_a_stale_service_answers_unavailable_writes_nothing_and_is_not_serving(
    make_engine: MakeEngine, grpc_servers: ServiceServers, epoch: int
) -> None:
    stale, current = make_engine(region_epoch=epoch - 1), make_engine(region_epoch=epoch)
    stale_server = await grpc_servers.inventory(engine=stale)
    current_server = await grpc_servers.inventory(engine=current)
    before = await table_counts(current, *INVENTORY_TABLES)

    assert await set_stock(stale_server.port, "SKU-STALE") == grpc.StatusCode.UNAVAILABLE
    assert await table_counts(current, *INVENTORY_TABLES) == before
    assert await health_status(f"127.0.0.1:{stale_server.port}") == NOT_SERVING

    assert await set_stock(current_server.port, "SKU-CURRENT") == grpc.StatusCode.OK
    assert await health_status(f"127.0.0.1:{current_server.port}") == SERVING


async def test_a_service_process_writes_as_its_region_epoch(
    module_database_url: str, epoch: int, tmp_path: Path
) -> None:
    """REGION_EPOCH in a real process's environment: stale, it is NOT_SERVING and refuses
    writes; once the fence is raised to its epoch, it serves and writes without a restart."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REGION_EPOCH"}}
    env |= {
        "DATABASE_URL": module_database_url,
        "GRPC_PORT": str(port),
        "REGION_EPOCH": str(epoch + 1),  # a Region promoted next, before its fence is raised
        "HEALTH_PROBE_INTERVAL_SECONDS": "0.2",
    }

    async def health_is(wanted: int) -> bool:
        try:
            return await health_status(f"127.0.0.1:{port}") == wanted
        except grpc.aio.AioRpcError:  # not listening yet
            return False

    log = tmp_path / "inventory.log"
    with log.open("wb") as output:
        async with python_module(
            "services.inventory", env=env, stdout=output.fileno(), stderr=output.fileno()
        ):
            await eventually(lambda: health_is(NOT_SERVING), what="NOT_SERVING", within=60)
            assert await set_stock(port, "SKU-AHEAD") == grpc.StatusCode.UNAVAILABLE
            await raise_epoch(module_database_url, epoch + 1)
            await eventually(lambda: health_is(SERVING), what="SERVING", within=10)
            assert await set_stock(port, "SKU-AHEAD") == grpc.StatusCode.OK


async def test_the_epoch_is_never_lowered(module_database_url: str, epoch: int) -> None:
    assert await raise_epoch(module_database_url, epoch) == epoch  # the same again: kept
    with pytest.raises(EpochLowered):
        await raise_epoch(module_database_url, epoch - 1)
    assert await current_epoch(module_database_url) == epoch


async def test_a_raise_waits_for_open_writes_of_the_old_epoch(
    module_database_url: str, make_engine: MakeEngine, epoch: int
) -> None:
    """Once raise_epoch returns, no transaction of the old epoch can still commit a write."""
    old = make_engine(region_epoch=epoch)
    sku = f"SKU-{uuid.uuid4().hex[:8]}"
    async with old.connect() as connection:
        await connection.execute(
            text("INSERT INTO inventory.stock_items (sku, on_hand) VALUES (:sku, 1)"), {"sku": sku}
        )
        raising = asyncio.create_task(raise_epoch(module_database_url, epoch + 1))
        async with session(module_database_url, None) as operator:
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = $1"
            await eventually(
                lambda: operator.fetchval(waiting, "AccessExclusiveLock"),
                what="the raise waits for the open write",
            )
        assert not raising.done()
        await connection.commit()  # written before the raise: kept
    assert await raising == epoch + 1
    with pytest.raises(Fenced):
        await write_stock_and_event(old, f"SKU-{uuid.uuid4().hex[:8]}")


async def test_the_command_line_shows_and_raises_the_epoch(
    module_database_url: str,
    epoch: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m marketplace_platform.fence`'s main, in a thread of its own (it runs its own
    event loop), on DATABASE_URL."""
    monkeypatch.setenv("DATABASE_URL", module_database_url)

    async def fence(*args: str) -> tuple[int, str]:
        try:
            await asyncio.to_thread(fence_main, list(args))
            code = 0
        except SystemExit as ended:
            code = int(ended.code or 0)
        output = capsys.readouterr()
        return code, (output.out + output.err).strip()

    assert await fence("show") == (0, f"region epoch {epoch}")
    assert await fence("raise", "--epoch", str(epoch + 1)) == (0, f"region epoch {epoch + 1}")
    refused = f"refused: the fence is at Region epoch {epoch + 1}; it is never lowered"
    assert await fence("raise", "--epoch", str(epoch)) == (1, refused)
    assert await current_epoch(module_database_url) == epoch + 1
