"""The local stack as `make run` starts it, for the checkout benchmark: start, stop, CPU seconds."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import psutil

from local_supervisor.launcher import LaunchedStack, launched_stack

READY_WITHIN = 180.0
KEPT_LINES = 300
SHOWN_LINES = 80  # of the supervisor's output, on stderr when the benchmark fails


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


@asynccontextmanager
async def running_stack(
    *, database_url: str, data_dir: Path, extra_env: Mapping[str, str]
) -> AsyncIterator[LaunchedStack]:
    """Start `python -m local_supervisor` on the database; yield once every service serves."""
    async with launched_stack(
        database_url=database_url,
        data_dir=data_dir,
        settings={"GRPC_VERBOSITY": "ERROR", **extra_env},
        ready_within=READY_WITHIN,
        keep_lines=KEPT_LINES,
    ) as stack:
        try:
            yield stack
        except BaseException:
            print(stack.tail(SHOWN_LINES), file=sys.stderr)
            raise


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


def sample_cpu(
    stack: LaunchedStack, postmaster: int | None, *, other_databases: Collection[str] = ()
) -> CpuSample:
    """CPU seconds of each stack process (with its exited children), PostgreSQL and this one;
    PostgreSQL's without the backends serving `other_databases` (another stack's)."""
    seconds: dict[str, float] = {}
    names = {pid: name for name, pid in stack.processes().items() if pid is not None}
    seconds["supervisor"] = _own_seconds(stack.process.pid)
    for pid, name in names.items():
        seconds[name] = _own_seconds(pid)
    if postmaster is not None:
        seconds["postgresql"] = _tree_seconds(postmaster, other_databases)
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


def _tree_seconds(pid: int, other_databases: Collection[str] = ()) -> float:
    total = _own_seconds(pid)
    for child in _children(pid):
        if not _serves(child, other_databases):
            total += _own_seconds(child.pid)
    return total


def _serves(backend: psutil.Process, databases: Collection[str]) -> bool:
    """Whether a PostgreSQL child works for one of `databases`: its process title names the
    database ("postgres: user bench_1a2b 127.0.0.1(5000) idle", an autovacuum worker's too)."""
    if not databases:
        return False
    try:
        words = set(" ".join(backend.cmdline()).split())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    return not words.isdisjoint(databases)
