"""The whole local stack for a chaos run: a database of its own, the supervisor as a child
process (which runs embedded Redis and restarts whatever dies), its log, and its pids."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

from local_supervisor.embedded import running_postgres
from local_supervisor.stack import STACK, ports_in_use

REPO = Path(__file__).resolve().parents[1]
RESTART_MARK = "exited with signal SIGKILL; restarting"
READY_MARK = "all services SERVING"
# The load needs more than a customer's everyday throttle, and killed saga engines must hand
# their executions over quickly.
STACK_ENV = {
    "PYTHONUNBUFFERED": "1",
    "SAGA_LEASE_SECONDS": "5",
    "GATEWAY_RATE_PER_SECOND": "1000",
    "GATEWAY_BURST": "2000",
    "GATEWAY_MAX_CONCURRENT_REQUESTS": "512",
}
# Deadlines shortened for the run, so faults that outlast them (verification.plan's
# OUTAGE_SECONDS) fit in minutes: authorization gives up on a PSP that stays down, the timeout
# sweep fails orders still PENDING, and a consumer retries soon after its dependency returns.
DEADLINE_ENV = {
    "AUTHORIZATION_BUDGET_SECONDS": "20",  # saga adapters (default 60): shorter than an outage
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
    """A running supervisor and what a chaos run needs to reach and hurt it."""

    database_url: str
    data_dir: Path
    base_port: int
    http_ports: dict[str, int]
    process: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def grpc_address(self, name: str) -> str:
        """host:port of a gRPC service of the stack."""
        offset = next(entry.port_offset for entry in STACK if entry.name == name)
        assert offset is not None
        return f"127.0.0.1:{self.base_port + offset}"

    def url(self, name: str) -> str:
        """The base URL of an HTTP process (gateway, psp)."""
        return f"http://127.0.0.1:{self.http_ports[name]}"

    def processes(self) -> dict[str, int | None]:
        """Each supervised process's pid from the supervisor's state file (None: restarting)."""
        path = self.data_dir / "run" / "supervisor.json"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {p["name"]: p["pid"] for p in state["processes"]}

    def restarts_seen(self) -> int:
        """How many SIGKILLed processes the supervisor said it restarts."""
        return sum(RESTART_MARK in line for line in self.lines)

    async def wait_for_line(self, text: str, within: float) -> None:
        """Wait until the supervisor printed a line containing `text`."""
        async with asyncio.timeout(within):
            while not any(text in line for line in self.lines):
                if self.process is not None and self.process.returncode is not None:
                    raise RuntimeError(f"the supervisor exited ({self.process.returncode})")
                self.changed.clear()
                await self.changed.wait()

    async def pump(self, log: Path) -> None:
        """Keep the supervisor's output in memory and in its log file."""
        assert self.process is not None
        assert self.process.stdout is not None
        with log.open("a", encoding="utf-8") as sink:
            async for raw in self.process.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.lines.append(line)
                sink.write(line + "\n")
                self.changed.set()
        self.changed.set()


def free_ports(rng: random.Random) -> tuple[int, dict[str, int]]:
    """A base port for the gRPC services and ports for the HTTP processes, all free now."""
    for _ in range(50):
        base = rng.randint(20_000, 40_000)
        http_ports = {"gateway": base + 20, "psp": base + 21}
        if not ports_in_use(base_port=base, http_ports=http_ports):
            return base, http_ports
    raise RuntimeError("no free ports")


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
    *, database_url: str, data_dir: Path, rng: random.Random, ready_within: float = 120.0
) -> AsyncIterator[ChaosStack]:
    """The supervisor running the whole stack on free ports until the block ends."""
    base_port, http_ports = free_ports(rng)
    stack = ChaosStack(database_url, data_dir, base_port, http_ports)
    # No REDIS_URL: the supervisor runs (and restarts) an embedded Redis we are free to kill.
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    # The PSP keeps its ledger under the run's folder: a shared one would mix other stacks'
    # intents into the ground truth (and let this run's reconciliation void them).
    env |= STACK_ENV | DEADLINE_ENV
    env |= {
        "DATABASE_URL": database_url,
        "PSP_DATA_DIR": str(data_dir / "psp"),
        "CARRIER_BOOKINGS_PATH": str(carrier_bookings_path(data_dir)),
    }
    argv = ["-m", "local_supervisor", "--data-dir", str(data_dir), "--base-port", str(base_port),
            "--gateway-port", str(http_ports["gateway"]), "--psp-port", str(http_ports["psp"]),
            "--ready-timeout", str(ready_within)]  # fmt: skip
    stack.process = await asyncio.create_subprocess_exec(
        sys.executable,
        *argv,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    pump = asyncio.create_task(stack.pump(data_dir / "supervisor.log"))
    try:
        await stack.wait_for_line(READY_MARK, within=ready_within)
        yield stack
    finally:
        await _stop(stack.process)
        pump.cancel()


async def _stop(process: asyncio.subprocess.Process, grace: float = 30.0) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(grace):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


def kill_targets() -> list[str]:
    """The processes a run may SIGKILL: every supervised service and worker (Redis apart)."""
    return [entry.name for entry in STACK]
