"""Alembic migrations, one schema per service, applied automatically.

Each service keeps its migrations in `services/<name>/migrations/`; its `env.py` is two lines
that call `run_env` here with the service's schema and metadata.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from marketplace_platform.settings import to_asyncpg_url


def migrations_dir(service_package: str) -> Path:
    """The migrations folder of a service package, e.g. services.inventory."""
    spec = importlib.util.find_spec(service_package)
    if spec is None or not spec.submodule_search_locations:
        raise LookupError(f"no package {service_package}")
    return Path(next(iter(spec.submodule_search_locations))) / "migrations"


def discover_services() -> dict[str, Path]:
    """Every package with migrations, by name, in a stable order: the platform's own schemas
    (queues, saga), then each service's, then the workers' (consumers)."""
    found: dict[str, Path] = {}
    for parent in ("marketplace_platform", "services", "workers"):
        spec = importlib.util.find_spec(parent)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for env in sorted(root.glob("*/migrations/env.py")):
            found[env.parent.parent.name] = env.parent
    return found


# Alembic's `context` is one module-level proxy, so one migration at a time per process;
# across processes the advisory lock in _migrate serializes them.
_one_at_a_time = threading.Lock()


def upgrade(database_url: str, script_location: Path) -> None:
    """Bring one service's schema to the newest revision (blocking; safe to run concurrently)."""
    with _one_at_a_time:
        _upgrade(database_url, script_location)


def _upgrade(database_url: str, script_location: Path) -> None:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", to_asyncpg_url(database_url).replace("%", "%%"))
    command.upgrade(config, "head")


def run_env(schema: str, metadata: MetaData) -> None:
    """The body of a service's alembic env.py: migrate `schema` under an advisory lock."""
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set")
    asyncio.run(_migrate(url, schema, metadata))


async def _migrate(url: str, schema: str, metadata: MetaData) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            # Several processes may start at once; one migrates, the others wait and find
            # nothing left to do.
            await connection.execute(
                text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": f"migrate:{schema}"}
            )
            await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            await connection.commit()
            await connection.run_sync(_run_migrations, schema, metadata)
            await connection.commit()
            await connection.execute(
                text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": f"migrate:{schema}"}
            )
    finally:
        await engine.dispose()


def _run_migrations(connection: Connection, schema: str, metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=False,
    )
    with context.begin_transaction():
        context.run_migrations()
