"""Shared fixtures: a fresh PostgreSQL database per test session, on the machine's server when
DATABASE_URL is set, otherwise on an embedded server started for the session; an engine on it
per module; Redis; moto in server mode and AWS test credentials."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

# gRPC core's info lines (GOAWAY on a stopping test server, fork notes) are noise in tests.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

# Before anything that imports grpc: local_supervisor turns gRPC's fork handlers off.
from local_supervisor.embedded import free_port, redis_server_argv, redis_url, running_postgres
from marketplace_platform.db import create_engine
from marketplace_platform.migrations import discover_services, upgrade
from marketplace_platform.settings import ServiceSettings
from tests.support.aws import AWS_TEST_CREDENTIALS
from tests.support.database import MakeEngine


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "engine(**settings): ServiceSettings for the module's `engine`, e.g. db_pool_size=20",
    )
    config.addinivalue_line(
        "markers",
        "own_database: the module's engines use a migrated database of the module's own",
    )


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


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server for the block, dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield with_database(server_url, name)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A database of its own for this test session, dropped afterwards."""
    async with fresh_database(postgres_server_url) as url:
        yield url


async def migrate(database_url: str) -> None:
    """Every service's schema migrated to head."""
    for script_location in discover_services().values():
        await asyncio.to_thread(upgrade, database_url, script_location)


@pytest.fixture(scope="session")
async def migrated_database_url(database_url: str) -> str:
    """The session database with every service's schema migrated to head."""
    await migrate(database_url)
    return database_url


@pytest.fixture(scope="module")
async def module_database_url(
    request: pytest.FixtureRequest, postgres_server_url: str, migrated_database_url: str
) -> AsyncIterator[str]:
    """The migrated database of the module's engines: the session's; for a module marked
    `pytestmark = pytest.mark.own_database` (its tests read or change every row of a table, as
    the outbox relay does), a new one of its own, dropped after the module."""
    if request.node.get_closest_marker("own_database") is None:
        yield migrated_database_url
        return
    async with fresh_database(postgres_server_url) as url:
        await migrate(url)
        yield url


@pytest.fixture(scope="module")
async def make_engine(module_database_url: str) -> AsyncIterator[MakeEngine]:
    """Make engines on the module's migrated database (keyword arguments are ServiceSettings);
    they are disposed of at the module's end."""
    engines: list[AsyncEngine] = []

    def make(**settings: Any) -> AsyncEngine:
        engines.append(create_engine(ServiceSettings(database_url=module_database_url, **settings)))
        return engines[-1]

    yield make
    for engine in engines:
        await engine.dispose()


@pytest.fixture(scope="module")
def engine(request: pytest.FixtureRequest, make_engine: MakeEngine) -> AsyncEngine:
    """The module's engine on the module's migrated database; a module sizes its pool with
    `pytestmark = pytest.mark.engine(db_pool_size=20)`."""
    marker = request.node.get_closest_marker("engine")
    return make_engine(**(marker.kwargs if marker else {}))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """An in-process moto server speaking the AWS APIs over HTTP."""
    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region, so boto3 never looks for real ones."""
    for variable, value in AWS_TEST_CREDENTIALS.items():
        monkeypatch.setenv(variable, value)


@pytest.fixture
def secrets_client(moto_endpoint: str, aws_credentials: None) -> Any:
    """A Secrets Manager client of the moto server."""
    import boto3  # type: ignore[import-untyped]

    return boto3.client(
        "secretsmanager",
        endpoint_url=moto_endpoint,
        region_name=AWS_TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
    )


@pytest.fixture(scope="session")
def redis_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis URL: REDIS_URL's server when set, otherwise an embedded redis-server for the run."""
    configured = os.environ.get("REDIS_URL")
    if configured:
        yield configured
        return
    port = free_port()
    argv = redis_server_argv(tmp_path_factory.mktemp("redis"), port=port, append_only=False)
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    try:
        wait_for_redis(port)
        yield redis_url(port)
    finally:
        server.terminate()
        server.wait(timeout=10)


def wait_for_redis(port: int, *, password: str | None = None, timeout: float = 10.0) -> None:
    """Block until a Redis server answers PING on 127.0.0.1:`port` (authenticated with
    `password`, if given)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=0.5)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    finally:
        client.close()
