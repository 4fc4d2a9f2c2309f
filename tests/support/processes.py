"""A Python module run as a real process by a test, never left running after it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def python_module(
    module: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    stdout: int = asyncio.subprocess.DEVNULL,
    stderr: int = asyncio.subprocess.DEVNULL,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m module args...` from the repository's root for the block; killed at its end
    if it is still running."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, *args, cwd=REPO, env=env, stdout=stdout, stderr=stderr
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
