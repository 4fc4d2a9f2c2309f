"""The whole local stack for a chaos run: a database of its own, the supervisor as a child
process (which runs embedded Redis and restarts whatever dies), its log, and its pids."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from local_supervisor.embedded import running_postgres
from local_supervisor.launcher import (
    REPO,
    LaunchedStack,
    StackPorts,
    free_ports,
    launched_stack,
    stack_pids,
)
from local_supervisor.stack import STACK

__all__ = [
    "DEADLINE_ENV",
    "REPO",
    "STACK_ENV",
    "ChaosStack",
    "carrier_bookings_path",
    "fresh_database",
    "kill_targets",
    "running_stack",
]

# The load needs more than a customer's everyday throttle, and killed saga engines must hand
# their executions over quickly.
STACK_ENV = {
    "SAGA_LEASE_SECONDS": "5",
    "GATEWAY_RATE_PER_SECOND": "1000",
    "GATEWAY_BURST": "2000",
    "GATEWAY_MAX_CONCURRENT_REQUESTS": "512",
    # No tracing (`make run` traces to files): the runs' figures stay comparable with earlier
    # ones, and the stack's CPU goes to the load. OTEL_TRACES_EXPORTER=jsonl in a run's
    # environment does not change this; pass it in `settings`.
    "OTEL_TRACES_EXPORTER": "none",
}
# Deadlines shortened for the run, so faults that outlast them (verification.plan's
# OUTAGE_SECONDS) fit in minutes: authorization gives up on a PSP that stays down, the timeout
# sweep fails orders still PENDING, and a consumer retries soon after its dependency returns.
DEADLINE_ENV = {
    "AUTHORIZATION_BUDGET_SECONDS": "20",  # saga tasks (default 60): shorter than an outage
    # Checkout's timeout sweep (default 780): past the authorization budget and a saga's usual
    # run on a loaded 2-core machine, inside an outage plus the compensation that follows it.
    "ORDER_TIMEOUT_SECONDS": "60",
    "TIMEOUT_SWEEP_INTERVAL_SECONDS": "5",  # (default 30)
    "CONSUMER_UNAVAILABLE_MAX_SECONDS": "10",  # consumers' backoff cap (default 300)
}


def carrier_bookings_path(data_dir: Path) -> Path:
    """Where the shipping consumer's carrier simulator keeps its bookings for a run."""
    return data_dir / "carrier" / "bookings.sqlite3"


@dataclass
class ChaosStack:
    """A launched stack (local_supervisor.launcher) and the database the run made for it: what a
    chaos run needs to reach and hurt it."""

    database_url: str
    data_dir: Path
    base_port: int
    http_ports: Mapping[str, int]
    launched: LaunchedStack | None = None  # None: a stack that is not running (e.g. a test's)

    @property
    def ports(self) -> StackPorts:
        """Where the stack listens."""
        return StackPorts(self.base_port, self.http_ports)

    def grpc_address(self, name: str) -> str:
        """host:port of a gRPC service of the stack."""
        return self.ports.grpc_address(name)

    def url(self, name: str) -> str:
        """The base URL of an HTTP process (gateway, psp)."""
        return self.ports.url(name)

    def processes(self) -> dict[str, int | None]:
        """Each supervised process's pid from the supervisor's state file (None: restarting)."""
        return stack_pids(self.data_dir)

    def restarts_seen(self) -> int:
        """How many SIGKILLed processes the supervisor said it restarts."""
        return self.launched.restarts_seen() if self.launched is not None else 0


@asynccontextmanager
async def fresh_database(server_url: str | None, scratch: Path) -> AsyncIterator[str]:
    """A new database for the run on `server_url`'s server (else an embedded one), dropped after."""
    async with AsyncExitStack() as stack:
        if server_url is None:
            server_url = await stack.enter_async_context(running_postgres(scratch / "postgres"))
        name = f"chaos_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            admin = await asyncpg.connect(server_url)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


@asynccontextmanager
async def running_stack(
    *,
    database_url: str,
    data_dir: Path,
    rng: random.Random,
    ready_within: float | None = 120.0,
    replicas: int = 1,
    settings: Mapping[str, str] = {},
    psp_url: str | None = None,
    skip_migrate: bool = False,
    enter_at_once: bool = False,
) -> AsyncIterator[ChaosStack]:
    """The supervisor running the whole stack on free ports until the block ends, entered once
    every process is ready (`replicas` of each, one per zone; None: at once); its output goes
    to data_dir/supervisor.log too. `settings`: more environment for every process; `psp_url`:
    a PSP outside the stack (e.g. one shared by two Regions) instead of its own simulator;
    `skip_migrate`: the processes start on the schema as it is (no service migrates either);
    `enter_at_once`: enter before the stack is ready, the supervisor still waiting ready_within
    (`stack.launched.wait_ready`)."""
    ports = free_ports(rng, replicas=replicas)
    # The PSP keeps its ledger under the run's folder: a shared one would mix other stacks'
    # intents into the ground truth (and let this run's reconciliation void them).
    environment = STACK_ENV | DEADLINE_ENV
    environment |= {
        "PSP_DATA_DIR": str(data_dir / "psp"),
        "CARRIER_BOOKINGS_PATH": str(carrier_bookings_path(data_dir)),
        **settings,
    }
    if skip_migrate:
        environment["MIGRATE_ON_START"] = "false"
    async with launched_stack(
        database_url=database_url,
        # No REDIS_URL: the supervisor runs (and restarts) an embedded Redis we are free to kill.
        redis_url=None,
        data_dir=data_dir,
        settings=environment,
        ready_within=ready_within,
        log_path=data_dir / "supervisor.log",
        ports=ports,
        replicas=replicas,
        psp_url=psp_url,
        skip_migrate=skip_migrate,
        enter_at_once=enter_at_once,
    ) as launched:
        yield ChaosStack(database_url, data_dir, ports.base_port, ports.http_ports, launched)


def kill_targets() -> list[str]:
    """The processes a run may SIGKILL: every supervised service and worker (Redis apart)."""
    return [entry.name for entry in STACK]
