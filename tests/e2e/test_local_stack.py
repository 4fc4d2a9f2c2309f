"""`make run`'s supervisor with the real services as real processes: all four SERVING through
gRPC health, reflection lists each service, a SIGKILLed service comes back, SIGTERM stops all."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from local_supervisor.stack import STACK, ports_in_use
from services.cart.bootstrap import SERVICE_NAME as CART
from services.checkout.bootstrap import SERVICE_NAME as CHECKOUT
from services.inventory.bootstrap import SERVICE_NAME as INVENTORY
from services.payment.bootstrap import SERVICE_NAME as PAYMENT
from tests.support.grpc_probes import SERVING, health_status, listed_services

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
READY_WITHIN = 60.0  # the promise: all four SERVING within 60 s once installed
WITHIN = 30.0
SERVICE_NAMES = {"cart": CART, "inventory": INVENTORY, "payment": PAYMENT, "checkout": CHECKOUT}


@dataclass
class RunningStack:
    process: asyncio.subprocess.Process
    base_port: int
    data_dir: Path
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def address(self, name: str) -> str:
        offset = next(e.port_offset for e in STACK if e.name == name)
        assert offset is not None
        return f"127.0.0.1:{self.base_port + offset}"

    def pid_of(self, name: str) -> int | None:
        """The process's pid from the supervisor's state file (None while it restarts)."""
        state = json.loads((self.data_dir / "run" / "supervisor.json").read_text())
        pid = next(p["pid"] for p in state["processes"] if p["name"] == name)
        return int(pid) if pid is not None else None

    async def wait_for_line(self, text: str, within: float = WITHIN) -> str:
        async with asyncio.timeout(within):
            while True:
                found = next((line for line in self.lines if text in line), None)
                if found:
                    return found
                self.changed.clear()
                await self.changed.wait()

    async def pump(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self.changed.set()


def free_base_port() -> int:
    for _ in range(50):
        base = random.randint(20_000, 40_000)
        if not ports_in_use(base_port=base):
            return base
    raise RuntimeError("no free ports")


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[RunningStack]:
    base_port = free_base_port()
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "local_supervisor",
        "--data-dir",
        str(tmp_path),
        "--base-port",
        str(base_port),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    running = RunningStack(process, base_port, tmp_path)
    pump = asyncio.create_task(running.pump())
    try:
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(WITHIN):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        pump.cancel()
        print("\n".join(running.lines[-200:]))


async def test_the_stack_serves_restarts_a_killed_service_and_stops_cleanly(
    stack: RunningStack,
) -> None:
    await stack.wait_for_line("all services SERVING", within=READY_WITHIN + 30)

    for name, service in SERVICE_NAMES.items():
        address = stack.address(name)
        assert await health_status(address, service) == SERVING
        assert service in await listed_services(address)
    pids = {name: stack.pid_of(name) for name in SERVICE_NAMES}
    killed = pids["inventory"]
    assert killed is not None

    os.kill(killed, signal.SIGKILL)
    await stack.wait_for_line("inventory exited with signal SIGKILL; restarting")
    await stack.wait_for_line("inventory is SERVING again")
    restarted = stack.pid_of("inventory")
    assert restarted not in (None, killed)
    assert await health_status(stack.address("inventory"), INVENTORY) == SERVING

    stack.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(WITHIN):
        assert await stack.process.wait() == 0
    survivors = [pid for pid in [*pids.values(), restarted] if pid and psutil.pid_exists(pid)]
    assert survivors == []
