"""The PSP simulator as a real process for tests, and a client for its admin and listing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from local_supervisor.embedded import free_port
from tests.support.polling import eventually

REPO = Path(__file__).resolve().parents[2]
STARTS_WITHIN = 20.0
STOPS_WITHIN = 10.0


@dataclass
class PspProcess:
    """One `python -m simulators.psp` process, its data directory and its log file; it may be
    stopped and started again (on a new port) with its data."""

    data_dir: Path
    log_path: Path
    port: int = 0
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start it on a free port and wait until it answers /healthz."""
        self.port = free_port()
        env = {**os.environ, "PSP_PORT": str(self.port), "PSP_DATA_DIR": str(self.data_dir)}
        with self.log_path.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "simulators.psp", cwd=REPO, env=env, stdout=log, stderr=log
            )
        async with httpx.AsyncClient(base_url=self.url, timeout=1.0) as http:
            await eventually(
                lambda: self._healthy(http),
                what="the simulator answers /healthz",
                within=STARTS_WITHIN,
            )

    async def _healthy(self, http: httpx.AsyncClient) -> bool:
        assert self.process is not None
        if self.process.returncode is not None:
            raise AssertionError(f"the simulator exited:\n{self.log_path.read_text()}")
        try:
            return (await http.get("/healthz")).status_code == 200
        except httpx.TransportError:
            return False

    async def stop(self) -> int:
        """SIGTERM (SIGKILL if it will not stop), and the exit code once it has stopped."""
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOPS_WITHIN):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        assert self.process.returncode is not None
        return self.process.returncode

    def log_records(self) -> list[dict[str, Any]]:
        """The simulator's JSON log lines so far."""
        records = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                records.append(json.loads(line))
        return records


@dataclass
class RunningPsp:
    """A started simulator: its URL and a client for it."""

    process: PspProcess
    http: httpx.AsyncClient

    @property
    def url(self) -> str:
        return self.process.url

    async def set_faults(self, **faults: float) -> None:
        """Replace the simulator's faults (unnamed ones reset to none)."""
        (await self.http.put("/admin/faults", json=faults)).raise_for_status()

    async def intents(self, **metadata: str) -> list[dict[str, Any]]:
        """Every intent whose metadata has these values."""
        params = {f"metadata[{k}]": v for k, v in metadata.items()}
        params["limit"] = "100"
        response = await self.http.get("/v1/payment_intents", params=params)
        response.raise_for_status()
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    def log_records(self) -> list[dict[str, Any]]:
        """The simulator's JSON log lines so far."""
        return self.process.log_records()


@asynccontextmanager
async def running_psp(directory: Path) -> AsyncIterator[RunningPsp]:
    """Run `python -m simulators.psp` on a free port, its data and log in `directory`, until
    the block ends."""
    process = PspProcess(directory / "data", directory / "psp.log")
    try:
        await process.start()
        async with httpx.AsyncClient(base_url=process.url, timeout=10) as http:
            yield RunningPsp(process, http)
    finally:
        if process.process is not None:
            await process.stop()
