"""Database helpers of the tests, and the types of the database fixtures (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

MakeEngine = Callable[..., AsyncEngine]
"""`make_engine(**service_settings)`: a new engine on the module's migrated database."""


async def table_counts(engine: AsyncEngine, *tables: Table) -> dict[str, int]:
    """How many rows each table holds, by table name (compared before and after a call that
    must write nothing: no other test writes meanwhile, as tests run one at a time)."""
    async with engine.connect() as connection:
        return {
            table.name: int(
                (await connection.execute(select(func.count()).select_from(table))).scalar_one()
            )
            for table in tables
        }
