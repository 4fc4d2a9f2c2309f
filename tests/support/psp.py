"""The PSP simulator as a real process for tests, and a client for its admin and listing."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from local_supervisor.embedded import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningPsp:
    """A started simulator: its URL and a client for it."""

    url: str
    http: httpx.AsyncClient

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


@asynccontextmanager
async def running_psp(data_dir: Path) -> AsyncIterator[RunningPsp]:
    """Run `python -m simulators.psp` on a free port until the block ends."""
    port = free_port()
    env = {**os.environ, "PSP_PORT": str(port), "PSP_DATA_DIR": str(data_dir)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators.psp",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        try:
            async with asyncio.timeout(20):
                while True:
                    try:
                        if (await http.get("/healthz")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.05)
            yield RunningPsp(url, http)
        finally:
            process.terminate()
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
