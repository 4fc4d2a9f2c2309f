"""`python -m local_supervisor` (what `make run` runs) started as a child process and held for
the length of a block: the one way the end-to-end tests, the chaos harness and the checkout
benchmark bring a whole stack up on free ports, watch its output and its state file, and stop it.

    async with launched_stack(database_url=url, data_dir=tmp, ready_within=90) as stack:
        gateway = stack.url("gateway")
        pid = stack.pid_of("saga-engine")
"""

from __future__ import annotations

import asyncio
import enum
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from local_supervisor.processes import RESTARTING, describe_exit
from local_supervisor.session import READY_MARK
from local_supervisor.settings import command_line
from local_supervisor.stack import GRPC_HOST, STACK, grpc_port, ports_in_use, stack_span
from local_supervisor.state_file import ProcessState, read_state, state_file_path
from local_supervisor.zones import held_zones_path, hold_zone, release_zone

REPO = Path(__file__).resolve().parents[1]
SUPERVISOR_MODULE = "local_supervisor"
WITHIN = 30.0  # default seconds for a wait on the supervisor's output
STOP_WITHIN = 30.0  # seconds between SIGTERM and SIGKILL when the block ends
TAIL_LINES = 60  # lines of the supervisor's output an error message quotes
# "payment exited with signal SIGKILL; restarting in 0.5s (restart 1)"
KILLED_AND_RESTARTED = f"{describe_exit(-signal.SIGKILL)}{RESTARTING}"
_LINE_LIMIT = 1 << 20  # bytes a line may have: the supervisor writes lines of up to 64 KiB
_DRAIN_WITHIN = 2.0  # seconds the output may take to end once the supervisor exited
# Free stacks' base ports: above the well-known servers' (PostgreSQL, Redis, 8080), below the
# kernel's ephemeral ports.
LOWEST_STACK_PORT = 10_000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")

T = TypeVar("T")


class _Inherit(enum.Enum):
    INHERIT = "inherit"


INHERIT: Final = _Inherit.INHERIT  # redis_url: whatever this process's REDIS_URL says


class StackExited(RuntimeError):
    """The supervisor ended before printing what was awaited."""


class StackNotReady(RuntimeError):
    """The stack did not say every service is SERVING in time (or the supervisor gave up)."""


@dataclass(frozen=True)
class StackPorts:
    """Where a stack listens: its gRPC services on base_port + offset (zone-a's replicas; the
    other zones' further up, local_supervisor.stack.grpc_port), its HTTP processes."""

    base_port: int
    http_ports: Mapping[str, int]  # gateway, psp

    def grpc_address(self, name: str, zone_index: int = 0) -> str:
        """host:port of a gRPC service of the stack (cart, inventory, payment, checkout), of
        its replica in zone `zone_index` (zone-a by default)."""
        entry = next(entry for entry in STACK if entry.name == name)
        return f"{GRPC_HOST}:{grpc_port(entry, base_port=self.base_port, zone_index=zone_index)}"

    def url(self, name: str) -> str:
        """The base URL of an HTTP process of the stack (gateway, psp)."""
        return f"http://{GRPC_HOST}:{self.http_ports[name]}"


def ephemeral_ports() -> range:
    """The ports the kernel hands out to outgoing connections and binds to port 0 (Linux's
    ip_local_port_range; elsewhere the IANA range)."""
    try:
        low, high = EPHEMERAL_RANGE_FILE.read_text().split()
    except OSError:
        return range(49152, 65536)
    return range(int(low), int(high) + 1)


def free_ports(
    rng: random.Random | None = None, *, attempts: int = 50, replicas: int = 1
) -> StackPorts:
    """A base port for the gRPC services and ports for the HTTP processes, all free now (every
    zone's, with `replicas`), below the kernel's ephemeral ports: one of those could be taken by
    any outgoing connection between this probe and a process's bind."""
    rng = rng or random.Random()
    highest = ephemeral_ports().start - stack_span(replicas) - 1
    if highest < LOWEST_STACK_PORT:
        raise RuntimeError(f"no room for a stack below the kernel's ephemeral ports ({highest})")
    for _ in range(attempts):
        base = rng.randint(LOWEST_STACK_PORT, highest)
        ports = StackPorts(base, {"gateway": base + 10, "psp": base + 11})
        if not ports_in_use(base_port=base, http_ports=ports.http_ports, replicas=replicas):
            return ports
    raise RuntimeError("no free ports for the stack")


def stack_pids(data_dir: Path) -> dict[str, int | None]:
    """Each process's pid from the state file of the supervisor run on `data_dir` (None while
    it restarts; {} before the supervisor wrote the file)."""
    return {state.name: state.pid for state in read_state(state_file_path(data_dir))}


def launch_env(
    *,
    database_url: str | None,
    redis_url: str | _Inherit | None = INHERIT,
    settings: Mapping[str, str] = {},
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The supervisor's environment (which every process of the stack inherits): `base` (this
    process's environment by default) with `settings`, then the stores. A store's URL of None
    takes its variable away, so the supervisor starts an embedded one of its own."""
    env = {**(os.environ if base is None else base), "PYTHONUNBUFFERED": "1", **settings}
    stores: dict[str, str | _Inherit | None] = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
    }
    for name, url in stores.items():
        if url is None:
            env.pop(name, None)
        elif isinstance(url, str):
            env[name] = url
    return env


class LaunchedStack:
    """A running `python -m local_supervisor`: where its processes listen, their pids (from its
    state file) and every line it printed (each process's output, prefixed with its name)."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        *,
        ports: StackPorts,
        data_dir: Path,
        keep_lines: int | None = None,
    ) -> None:
        self.process = process  # the supervisor itself (e.g. for its CPU seconds, or a signal)
        self.ports = ports
        self.data_dir = data_dir
        self.lines: list[str] = []  # what it printed so far (the last keep_lines, if set)
        self._keep_lines = keep_lines
        self._restarts = 0
        self._ended = False
        self._changed = asyncio.Event()

    def grpc_address(self, name: str) -> str:
        """host:port of a gRPC service of the stack."""
        return self.ports.grpc_address(name)

    def url(self, name: str) -> str:
        """The base URL of an HTTP process (gateway, psp)."""
        return self.ports.url(name)

    @property
    def state_file(self) -> Path:
        """The supervisor's state file."""
        return state_file_path(self.data_dir)

    def processes(self) -> dict[str, int | None]:
        """Each supervised process's pid from the state file (None while it restarts; {} before
        the supervisor wrote the file)."""
        return stack_pids(self.data_dir)

    def pid_of(self, name: str) -> int | None:
        """The process's pid from the state file (None while it restarts)."""
        return self.processes().get(name)

    def states(self) -> list[ProcessState]:
        """Every supervised process as the state file shows it ([] before it was written)."""
        return read_state(self.state_file)

    def zone_processes(self, zone: str) -> dict[str, int | None]:
        """Each process of `zone` with its pid from the state file (None: it is down)."""
        return {state.name: state.pid for state in self.states() if state.zone == zone}

    def hold_zone(self, zone: str) -> None:
        """Tell the supervisor to restart none of `zone`'s processes that end (a lost zone)."""
        hold_zone(held_zones_path(self.data_dir), zone)

    def release_zone(self, zone: str) -> None:
        """Tell the supervisor to restart `zone`'s processes again, those down at once."""
        release_zone(held_zones_path(self.data_dir), zone)

    def restarts_seen(self) -> int:
        """How many SIGKILLed processes the supervisor said it restarts."""
        return self._restarts

    def tail(self, count: int = TAIL_LINES) -> str:
        """The last `count` lines the supervisor printed."""
        return "\n".join(self.lines[-count:])

    async def wait_for_line(self, text: str, within: float = WITHIN) -> str:
        """The first line containing `text`, once printed; TimeoutError after `within` seconds,
        StackExited as soon as the supervisor ended without printing one."""

        def found() -> str | None:
            return next((line for line in self.lines if text in line), None)

        return await self._wait_until(found, f"a line with {text!r}", within)

    async def wait_ready(self, within: float) -> None:
        """Return once the supervisor said every process is ready; StackNotReady otherwise."""
        try:
            await self.wait_for_line(READY_MARK, within=within)
        except (TimeoutError, StackExited) as error:
            raise StackNotReady(f"the stack did not become ready: {error}") from error

    async def wait_for_lines(self, text: str, count: int, within: float = WITHIN) -> None:
        """Wait until `count` lines contain `text` (as wait_for_line)."""

        def enough() -> bool | None:
            return sum(text in line for line in self.lines) >= count or None

        await self._wait_until(enough, f"{count} lines with {text!r}", within)

    async def _wait_until(self, check: Callable[[], T | None], what: str, within: float) -> T:
        try:
            async with asyncio.timeout(within):
                while True:
                    self._changed.clear()
                    result = check()
                    if result is not None:
                        return result
                    if self._ended:
                        break
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(
                f"no {what} within {within:g}s; the supervisor's last lines:\n{self.tail()}"
            ) from None
        with suppress(TimeoutError):
            async with asyncio.timeout(_DRAIN_WITHIN):
                await self.process.wait()
        raise StackExited(
            f"the supervisor exited ({self.process.returncode}) before printing {what}; "
            f"its last lines:\n{self.tail()}"
        )

    async def _pump(self, log_path: Path | None) -> None:
        """Keep the supervisor's output (and append it to log_path) until it ends."""
        assert self.process.stdout is not None
        sink = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            sink = log_path.open("a", encoding="utf-8")
        try:
            async for raw in self.process.stdout:
                line = raw.decode(errors="replace").rstrip()
                self.lines.append(line)
                if self._keep_lines is not None:
                    del self.lines[: -self._keep_lines]
                self._restarts += KILLED_AND_RESTARTED in line
                if sink is not None:
                    sink.write(line + "\n")
                self._changed.set()
        finally:
            if sink is not None:
                sink.close()
            self._ended = True
            self._changed.set()


@asynccontextmanager
async def launched_stack(
    *,
    database_url: str | None,
    data_dir: Path,
    settings: Mapping[str, str] = {},
    redis_url: str | _Inherit | None = INHERIT,
    ready_within: float | None = None,
    log_path: Path | None = None,
    ports: StackPorts | None = None,
    keep_lines: int | None = None,
    stop_within: float = STOP_WITHIN,
    replicas: int = 1,
    psp_url: str | None = None,
    skip_migrate: bool = False,
    enter_at_once: bool = False,
) -> AsyncIterator[LaunchedStack]:
    """`python -m local_supervisor` on free ports (or `ports`) until the block ends, then SIGTERM
    (SIGKILL after stop_within seconds).

    database_url / redis_url: the stores (None: the supervisor starts an embedded one; redis_url
    INHERIT: this process's REDIS_URL, if any). settings: environment for every process.
    ready_within: wait (that long, also the supervisor's --ready-timeout) until every process is
    ready before entering the block, else raise StackNotReady; None enters at once.
    enter_at_once: enter at once all the same, the supervisor still given ready_within (e.g. a
    warm standby's stack, ready only once its database is promoted: `stack.wait_ready`).
    log_path: append the supervisor's output there too. keep_lines: keep only that many lines.
    replicas: of each replicated process, one per zone (`--replicas`).
    psp_url: a PSP outside the stack to call instead of starting the simulator (`--psp-url`).
    skip_migrate: start the processes on the schema as it is (`--skip-migrate`).
    """
    ports = ports or free_ports(replicas=replicas)
    argv = command_line(
        data_dir=data_dir,
        base_port=ports.base_port,
        http_ports=ports.http_ports,
        ready_timeout=ready_within,
        replicas=replicas,
        psp_url=psp_url,
        skip_migrate=skip_migrate,
    )
    env = launch_env(database_url=database_url, redis_url=redis_url, settings=settings)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", SUPERVISOR_MODULE, *argv,
        cwd=REPO, env=env, limit=_LINE_LIMIT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    stack = LaunchedStack(process, ports=ports, data_dir=data_dir, keep_lines=keep_lines)
    pump = asyncio.create_task(stack._pump(log_path))
    try:
        if ready_within is not None and not enter_at_once:
            await stack.wait_ready(ready_within)
        yield stack
    finally:
        await _stop(process, within=stop_within)
        # The output ends with the supervisor, unless something it started still holds it.
        await asyncio.wait({pump}, timeout=_DRAIN_WITHIN)
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)


async def _stop(process: asyncio.subprocess.Process, *, within: float) -> None:
    """SIGTERM the supervisor (it stops every process in order); SIGKILL it after `within`."""
    if process.returncode is not None:
        return
    with suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(within):
            await process.wait()
    except TimeoutError:
        with suppress(ProcessLookupError):
            process.kill()
        await process.wait()
