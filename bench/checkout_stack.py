"""The local stack as `make run` starts it, for the checkout benchmark: start, stop, CPU seconds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import psutil

from local_supervisor.stack import ports_in_use

REPO = Path(__file__).resolve().parents[1]
READY_LINE = "all services SERVING"
READY_WITHIN = 180.0
STOP_WITHIN = 30.0
KEPT_LINES = 300


@dataclass(kw_only=True)
class RunningStack:
    """The supervisor process of a running stack and where its gateway listens."""

    process: asyncio.subprocess.Process
    gateway_url: str
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    def process_names(self) -> dict[int, str]:
        """Pid -> name of every stack process, from the supervisor's state file."""
        state = json.loads((self.data_dir / "run" / "supervisor.json").read_text())
        return {int(p["pid"]): str(p["name"]) for p in state["processes"] if p["pid"] is not None}


@dataclass(frozen=True, kw_only=True)
class CpuSample:
    """CPU seconds (user + system) per process group at one moment."""

    seconds: Mapping[str, float]

    def since(self, earlier: CpuSample) -> dict[str, float]:
        """CPU seconds spent by each group between `earlier` and this sample."""
        return {
            name: round(spent - earlier.seconds.get(name, 0.0), 3)
            for name, spent in self.seconds.items()
        }


def free_ports() -> tuple[int, int, int]:
    """A base port for the gRPC services, and ports for the gateway and the PSP simulator."""
    for attempt in range(200):
        base = 21_000 + (os.getpid() * 37 + attempt * 97) % 18_000
        http = {"gateway": base + 10, "psp": base + 11}
        if not ports_in_use(base_port=base, http_ports=http):
            return base, http["gateway"], http["psp"]
    raise RuntimeError("no free ports for the stack")


@asynccontextmanager
async def running_stack(
    *, database_url: str, data_dir: Path, extra_env: Mapping[str, str]
) -> AsyncIterator[RunningStack]:
    """Start `python -m local_supervisor` on the database; yield once every service serves."""
    base_port, gateway_port, psp_port = free_ports()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PYTHONUNBUFFERED": "1",
        "GRPC_VERBOSITY": "ERROR",
        **extra_env,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "local_supervisor",
        "--data-dir", str(data_dir),
        "--base-port", str(base_port),
        "--gateway-port", str(gateway_port),
        "--psp-port", str(psp_port),
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    stack = RunningStack(
        process=process, gateway_url=f"http://127.0.0.1:{gateway_port}", data_dir=data_dir
    )
    ready = asyncio.Event()
    pump = asyncio.create_task(_pump(stack, ready))
    try:
        await _wait_ready(stack, ready)
        yield stack
    except BaseException:
        print("\n".join(stack.lines[-80:]), file=sys.stderr)
        raise
    finally:
        await _stop(process)
        pump.cancel()
        with suppress(asyncio.CancelledError):
            await pump


async def _pump(stack: RunningStack, ready: asyncio.Event) -> None:
    assert stack.process.stdout is not None
    async for raw in stack.process.stdout:
        line = raw.decode(errors="replace").rstrip()
        stack.lines.append(line)
        del stack.lines[:-KEPT_LINES]
        if READY_LINE in line:
            ready.set()


async def _wait_ready(stack: RunningStack, ready: asyncio.Event) -> None:
    exited = asyncio.create_task(stack.process.wait())
    waiting = asyncio.create_task(ready.wait())
    try:
        done, _ = await asyncio.wait(
            {exited, waiting}, timeout=READY_WITHIN, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in (exited, waiting):
            task.cancel()
    if waiting not in done or not ready.is_set():
        tail = "\n".join(stack.lines[-60:])
        raise RuntimeError(f"the stack did not become ready:\n{tail}")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_WITHIN):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


async def postmaster_pid(database_url: str) -> int | None:
    """The PostgreSQL server's main process, when it runs on this machine and we may see it."""
    connection = await asyncpg.connect(database_url)
    try:
        backend: int = await connection.fetchval("SELECT pg_backend_pid()")
        # Asked while the backend lives: once the connection closes it is gone.
        return psutil.Process(backend).ppid()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    finally:
        await connection.close()


def sample_cpu(stack: RunningStack, postmaster: int | None) -> CpuSample:
    """CPU seconds of each stack process (with its exited children), PostgreSQL and this one."""
    seconds: dict[str, float] = {}
    names = stack.process_names()
    seconds["supervisor"] = _own_seconds(stack.process.pid)
    for pid, name in names.items():
        seconds[name] = _own_seconds(pid)
    if postmaster is not None:
        seconds["postgresql"] = _tree_seconds(postmaster)
    # Children of the supervisor that are not in its state file (the embedded redis-server).
    seconds["other stack children"] = sum(
        _own_seconds(child.pid) for child in _children(stack.process.pid) if child.pid not in names
    )
    seconds["load generator"] = _own_seconds(os.getpid(), with_exited_children=False)
    return CpuSample(seconds=seconds)


def stack_seconds(spent: Mapping[str, float]) -> float:
    """CPU seconds of the stack and PostgreSQL, without the load generator's own."""
    return sum(value for name, value in spent.items() if name != "load generator")


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=False)
    except psutil.NoSuchProcess:
        return []


def _own_seconds(pid: int, *, with_exited_children: bool = True) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
    total = times.user + times.system
    if with_exited_children:
        # Children it has waited for (a restarted service, a finished PostgreSQL backend).
        total += times.children_user + times.children_system
    return total


def _tree_seconds(pid: int) -> float:
    total = _own_seconds(pid)
    for child in _children(pid):
        total += _own_seconds(child.pid)
    return total
