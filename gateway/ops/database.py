"""The console's connection to the platform's database: a small pool, a statement timeout on
every statement, and read-only transactions for everything but the two redrives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from marketplace_platform.db import create_engine
from marketplace_platform.settings import ServiceSettings

APPLICATION_NAME = "gateway-ops"
_READ_ONLY = text("SET TRANSACTION READ ONLY")


def open_engine(
    url: str, *, pool_size: int, statement_timeout_ms: int, timeout_seconds: float
) -> AsyncEngine:
    """An engine on `url` with `pool_size` connections (and as many overflowing), each
    statement cut at `statement_timeout_ms`, a connection waited for at most `timeout_seconds`."""
    return create_engine(
        ServiceSettings(
            service_name=APPLICATION_NAME,
            database_url=url,
            db_pool_size=pool_size,
            db_statement_timeout_ms=statement_timeout_ms,
            default_call_timeout_seconds=timeout_seconds,
        )
    )


@asynccontextmanager
async def reading(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A read-only transaction: whatever runs in it cannot change a row."""
    async with engine.connect() as connection, connection.begin():
        await connection.execute(_READ_ONLY)
        yield connection


def iso(moment: datetime | None) -> str | None:
    """An ISO-8601 UTC string (what every time in the console's JSON is), or None."""
    if moment is None:
        return None
    # Always to the microsecond: strings of one width sort as the times they name.
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def money(amount: int | None, currency: str | None) -> dict[str, object] | None:
    """Money as the console shows it: integer minor units and the currency."""
    if amount is None or currency is None:
        return None
    return {"amount": int(amount), "currency": currency}
