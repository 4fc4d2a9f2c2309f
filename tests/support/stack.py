"""The whole local stack as real processes, started by `make run`'s supervisor, as tests see it."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from local_supervisor.stack import STACK, ports_in_use

REPO = Path(__file__).resolve().parents[2]
WITHIN = 30.0


@dataclass
class RunningStack:
    process: asyncio.subprocess.Process
    base_port: int
    http_ports: dict[str, int]
    data_dir: Path
    lines: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def address(self, name: str) -> str:
        offset = next(e.port_offset for e in STACK if e.name == name)
        assert offset is not None
        return f"127.0.0.1:{self.base_port + offset}"

    def url(self, name: str) -> str:
        """The base URL of an HTTP process (gateway, psp)."""
        return f"http://127.0.0.1:{self.http_ports[name]}"

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

    async def wait_for_lines(self, text: str, count: int, within: float = WITHIN) -> None:
        """Wait until `count` lines contain `text`."""
        async with asyncio.timeout(within):
            while sum(text in line for line in self.lines) < count:
                self.changed.clear()
                await self.changed.wait()

    async def pump(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip())
            self.changed.set()


def free_ports() -> tuple[int, dict[str, int]]:
    """A base port for the gRPC services and ports for the HTTP processes, all free now."""
    for _ in range(50):
        base = random.randint(20_000, 40_000)
        http_ports = {"gateway": base + 10, "psp": base + 11}
        if not ports_in_use(base_port=base, http_ports=http_ports):
            return base, http_ports
    raise RuntimeError("no free ports")
