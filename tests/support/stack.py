"""The whole local stack as real processes for the end-to-end tests: `make run`'s supervisor,
started by its own launcher (local_supervisor.launcher) with the tests' settings."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from local_supervisor.launcher import REPO, LaunchedStack, launched_stack

__all__ = ["REPO", "WITHIN", "LaunchedStack", "drills_own_servers", "running_stack"]

WITHIN = 30.0
# A killed saga runner's executions are taken over once its lease lapses: keep it short.
# Tracing is off unless a test asks for it (the supervisor turns it on for `make run`).
TEST_SETTINGS = {"SAGA_LEASE_SECONDS": "5", "OTEL_TRACES_EXPORTER": "none"}
SHOWN_LINES = 200  # of the supervisor's output, printed when the block ends (pytest shows it)

# The database and Region drills start PostgreSQL servers of their own (a primary and its
# standby) and ignore DATABASE_URL and REDIS_URL, so a run against the machine's servers would
# repeat the embedded run's drills exactly: they run where neither is set (a newcomer's
# `make test`, CI's second run), and `make drill-db` / `make drill-region` run them anywhere.
drills_own_servers = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL") or os.environ.get("REDIS_URL")),
    reason="the drill runs its own servers: it runs in the embedded run (neither URL set)",
)


@asynccontextmanager
async def running_stack(
    database_url: str, data_dir: Path, settings: Mapping[str, str] | None = None
) -> AsyncIterator[LaunchedStack]:
    """The supervisor on free ports until the block ends, entered at once (tests wait for
    "all services SERVING" themselves); `settings` go to every process's environment."""
    launched: LaunchedStack | None = None
    try:
        async with launched_stack(
            database_url=database_url,
            data_dir=data_dir,
            settings={**TEST_SETTINGS, **(settings or {})},
            stop_within=WITHIN,
        ) as launched:
            yield launched
    finally:
        if launched is not None:
            print(launched.tail(SHOWN_LINES))
