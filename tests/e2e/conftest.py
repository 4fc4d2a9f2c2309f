"""Fixtures for end-to-end tests: the whole local stack as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.stack import REPO, WITHIN, RunningStack, free_ports


@asynccontextmanager
async def running_stack(
    database_url: str, data_dir: Path, settings: Mapping[str, str] | None = None
) -> AsyncIterator[RunningStack]:
    """`python -m local_supervisor` on free ports until the block ends; `settings` go to every
    process's environment."""
    base_port, http_ports = free_ports()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        # A killed saga runner's executions are taken over once its lease lapses: keep it short.
        "SAGA_LEASE_SECONDS": "5",
        **(settings or {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "local_supervisor",
        "--data-dir",
        str(data_dir),
        "--base-port",
        str(base_port),
        "--gateway-port",
        str(http_ports["gateway"]),
        "--psp-port",
        str(http_ports["psp"]),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    running = RunningStack(process, base_port, http_ports, data_dir)
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


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[RunningStack]:
    async with running_stack(database_url, tmp_path) as running:
        yield running
