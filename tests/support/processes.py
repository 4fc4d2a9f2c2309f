"""A Python module run as a real process by a test, never left running after it."""

from __future__ import annotations

import asyncio
import subprocess
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


class PythonProcesses:
    """`python -m module` processes a test starts (from the repository's root, with `env`), each
    writing its output to a file of its own in `log_dir`; `stop_all` kills those still running."""

    def __init__(
        self, module: str, env: Mapping[str, str], log_dir: Path, log_name: str = "process-{}.log"
    ) -> None:
        self.module = module
        self.env = dict(env)
        self.log_dir = log_dir
        self.log_name = log_name
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        """One more process; its output goes to `log_name` with its index filled in."""
        with (self.log_dir / self.log_name.format(len(self.processes))).open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
