"""Shared fixtures: a fresh PostgreSQL database per test session, on the machine's server when
DATABASE_URL is set, otherwise on an embedded server started for the session."""

from __future__ import annotations

import asyncio
import os

# gRPC core's info lines (GOAWAY on a stopping test server, fork notes) are noise in tests.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url

from local_supervisor.embedded import running_postgres
from marketplace_platform.migrations import discover_services, upgrade


def with_database(url: str, database: str) -> str:
    """The same server URL pointing at another database."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
async def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A URL of a PostgreSQL server we may create databases on."""
    configured = os.environ.get("DATABASE_URL")
    if configured:
        yield configured
        return
    async with running_postgres(Path(tmp_path_factory.mktemp("pg")) / "data") as url:
        yield url


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A database of its own for this test session, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(postgres_server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def migrated_database_url(database_url: str) -> str:
    """The session database with every service's schema migrated to head."""
    for script_location in discover_services().values():
        await asyncio.to_thread(upgrade, database_url, script_location)
    return database_url
