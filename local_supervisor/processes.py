"""The supervisor core: start child processes, stream their output, restart them, stop them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from local_supervisor.console import PrefixedConsole
from local_supervisor.parent_death import die_with_supervisor_hook
from local_supervisor.readiness import Readiness, ReadinessCheck, ReadinessProber
from local_supervisor.state_file import ProcessState, remove_state, write_state
from local_supervisor.zones import clear_holds, held_zones

_MAX_LINE_BYTES = 64 * 1024
_OUTPUT_DRAIN_SECONDS = 1.0
_READY_POLL_SECONDS = 0.1
_HOLD_POLL_SECONDS = 0.2  # how often a held zone's ended process looks for its release
# Follows how a process ended in the line the supervisor prints before restarting it:
# "inventory exited with signal SIGKILL; restarting in 0.5s (restart 1)".
RESTARTING = "; restarting"
# ... and instead of it when the process's zone is held down (local_supervisor.zones):
# "inventory@zone-a exited with signal SIGKILL; not restarted: zone-a is held down ...".
HELD_DOWN = "; not restarted:"


@dataclass(frozen=True, kw_only=True)
class ProcessSpec:
    """One process to keep running: its name, command, extra environment and readiness check."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    readiness: ReadinessCheck | None = None
    zone: str | None = None  # the zone it runs in; None: it belongs to none (the PSP, Redis)

    @property
    def address(self) -> str | None:
        """Where the process listens, if it has a readiness check."""
        return self.readiness.address if self.readiness else None


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """Capped exponential backoff between restarts, forgotten once a child has run a while."""

    first_delay: float = 0.5
    max_delay: float = 10.0
    reset_after: float = 30.0

    def delay(self, consecutive_restarts: int) -> float:
        """Seconds to wait before the n-th restart in a row (n >= 1)."""
        exponent = min(consecutive_restarts - 1, 32)
        return float(min(self.first_delay * 2**exponent, self.max_delay))


@dataclass(eq=False)
class _Child:
    spec: ProcessSpec
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    keeper: asyncio.Task[None] | None = None
    comeback: asyncio.Task[None] | None = None


def describe_exit(returncode: int) -> str:
    """Say how a process ended, from its asyncio return code."""
    if returncode < 0:
        try:
            return f"exited with signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"exited with signal {-returncode}"
    return f"exited with code {returncode}"


class Supervisor:
    """Keeps a set of child processes running until told to stop."""

    def __init__(
        self,
        *,
        console: PrefixedConsole,
        base_env: Mapping[str, str],
        state_file: Path | None = None,
        stop_grace: float = 10.0,
        restart_policy: RestartPolicy | None = None,
        held_zones_file: Path | None = None,
    ) -> None:
        self._console = console
        self._base_env = dict(base_env)
        self._state_file = state_file
        # local_supervisor.zones: a zone held there has its ended processes left down.
        self._held_zones_file = held_zones_file
        if held_zones_file is not None:
            clear_holds(held_zones_file)
        self._stop_grace = stop_grace
        self._restart_policy = restart_policy or RestartPolicy()
        self._prober = ReadinessProber()
        self._tiers: list[list[_Child]] = []
        self._children: dict[str, _Child] = {}
        self._resources: dict[str, str] = {}
        self._stopping = asyncio.Event()
        self._hurry = asyncio.Event()
        self._stopped = False
        self._stop_task: asyncio.Task[None] | None = None

    @property
    def stopping(self) -> bool:
        """Whether stop() has begun."""
        return self._stopping.is_set()

    def launch(self, specs: Iterable[ProcessSpec]) -> None:
        """Start these processes as one tier; stop() ends later tiers before earlier ones."""
        if self.stopping:
            return
        tier: list[_Child] = []
        for spec in specs:
            if spec.name in self._children:
                raise ValueError(f"a process named {spec.name!r} is already supervised")
            child = _Child(spec)
            self._console.widen([spec.name])
            self._children[spec.name] = child
            child.keeper = asyncio.create_task(self._keep_running(child), name=spec.name)
            child.keeper.add_done_callback(self._report_crash)
            tier.append(child)
        self._tiers.append(tier)

    def publish_resources(self, resources: Mapping[str, str]) -> None:
        """Record shared resources (URLs, already masked) in the state file."""
        self._resources.update(resources)
        self._write_state()

    def snapshot(self) -> list[ProcessState]:
        """What runs where right now, in launch order."""
        return [
            ProcessState(
                name=child.spec.name,
                pid=_pid_if_running(child.process),
                address=child.spec.address,
                restarts=child.restarts,
                zone=child.spec.zone,
            )
            for child in self._children.values()
        ]

    async def wait_until_ready(
        self, names: Iterable[str] | None = None, *, within: float
    ) -> dict[str, Readiness]:
        """Poll until every named child is ready or `within` seconds pass; return last answers."""
        wanted = [self._children[name] for name in (self._children if names is None else names)]
        answers = {
            child.spec.name: Readiness(ready=False, detail="not checked") for child in wanted
        }
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not self.stopping:
            waiting = [child for child in wanted if not answers[child.spec.name].ready]
            results = await asyncio.gather(*(self._check(child) for child in waiting))
            answers.update(zip((child.spec.name for child in waiting), results, strict=True))
            if all(answer.ready for answer in answers.values()) or loop.time() >= deadline:
                break
            await asyncio.sleep(min(_READY_POLL_SECONDS, max(0.0, deadline - loop.time())))
        return answers

    async def run_to_completion(self, spec: ProcessSpec) -> int | None:
        """Run a one-off process (migrations) with streamed output; None if stopped meanwhile."""
        process = await self._spawn(spec)
        pump = asyncio.create_task(self._pump_output(spec.name, process))
        stop_wait = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({pump, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if self.stopping:
                await self._end(process, self._stop_grace)
                return None
            return await process.wait()
        finally:
            stop_wait.cancel()
            if process.returncode is None:
                await self._end(process, self._stop_grace)
            await asyncio.wait({pump}, timeout=_OUTPUT_DRAIN_SECONDS)

    def hurry(self) -> None:
        """Make a running or coming stop() SIGKILL stragglers now instead of waiting."""
        self._hurry.set()

    async def stop(self) -> None:
        """SIGTERM every child (latest tier first), SIGKILL the ones still there after the grace."""
        if self._stop_task is None:
            self._stopping.set()
            self._stop_task = asyncio.create_task(self._stop_everything())
        await finish_even_if_cancelled(self._stop_task)

    async def _stop_everything(self) -> None:
        for child in self._children.values():
            if child.comeback:
                child.comeback.cancel()
        for tier in reversed(self._tiers):
            await self._stop_tier(tier)
        await self._prober.close()
        self._stopped = True
        if self._state_file:
            remove_state(self._state_file)
        if self._held_zones_file:
            clear_holds(self._held_zones_file)

    async def _stop_tier(self, tier: list[_Child]) -> None:
        running = [child for child in tier if _pid_if_running(child.process)]
        if running:
            names = ", ".join(child.spec.name for child in running)
            self._console.say(f"sending SIGTERM to {names}")
        for child in running:
            _signal_group(child.process, signal.SIGTERM)
        keepers = {child.keeper for child in tier if child.keeper and not child.keeper.done()}
        stragglers = await self._wait_within_grace(keepers)
        if not stragglers:
            return
        late = [child for child in tier if child.keeper in stragglers]
        names = ", ".join(child.spec.name for child in late)
        waited = "asked to hurry" if self._hurry.is_set() else f"after {self._stop_grace:g}s"
        self._console.say(f"{names} still running ({waited}); sending SIGKILL")
        for child in late:
            _signal_group(child.process, signal.SIGKILL)
        await asyncio.wait(stragglers, timeout=self._stop_grace)

    async def _wait_within_grace(self, tasks: set[asyncio.Task[None]]) -> set[asyncio.Task[None]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._stop_grace
        pending = set(tasks)
        while pending and not self._hurry.is_set() and loop.time() < deadline:
            hurry = asyncio.create_task(self._hurry.wait())
            done, _ = await asyncio.wait(
                pending | {hurry},
                timeout=deadline - loop.time(),
                return_when=asyncio.FIRST_COMPLETED,
            )
            hurry.cancel()
            pending -= done
        return pending

    async def _keep_running(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        consecutive = 0
        while not self.stopping:
            started = loop.time()
            outcome = await self._run_once(child)
            if self.stopping:
                self._console.say(f"{child.spec.name} {outcome}")
                return
            if loop.time() - started >= self._restart_policy.reset_after:
                consecutive = 0
            child.restarts += 1
            if self._held(child):
                await self._wait_for_release(child, outcome)
                consecutive = 0  # its zone was away, not a process failing again and again
                continue
            consecutive += 1
            delay = self._restart_policy.delay(consecutive)
            self._console.say(
                f"{child.spec.name} {outcome}{RESTARTING} in {delay:.1f}s "
                f"(restart {child.restarts})"
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)

    def _held(self, child: _Child) -> bool:
        zone = child.spec.zone
        return bool(self._held_zones_file and zone and zone in held_zones(self._held_zones_file))

    async def _wait_for_release(self, child: _Child, outcome: str) -> None:
        """Leave a held zone's ended process down until its zone is released (or we stop)."""
        self._console.say(
            f"{child.spec.name} {outcome}{HELD_DOWN} {child.spec.zone} is held down "
            f"(restart {child.restarts} once it is released)"
        )
        while self._held(child) and not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=_HOLD_POLL_SECONDS)
        if not self.stopping:
            self._console.say(f"{child.spec.zone} released; restarting {child.spec.name}")

    async def _run_once(self, child: _Child) -> str:
        try:
            process = await self._spawn(child.spec)
        except OSError as error:
            return f"could not start ({error})"
        child.process = process
        self._write_state()
        if self.stopping:
            _signal_group(process, signal.SIGTERM)
        elif child.restarts and child.spec.readiness:
            child.comeback = asyncio.create_task(self._announce_comeback(child, process))
        pump = asyncio.create_task(self._pump_output(child.spec.name, process))
        returncode = await process.wait()
        await asyncio.wait({pump}, timeout=_OUTPUT_DRAIN_SECONDS)
        if child.comeback:
            child.comeback.cancel()
        self._write_state()
        return describe_exit(returncode)

    async def _spawn(self, spec: ProcessSpec) -> asyncio.subprocess.Process:
        env = {"PYTHONUNBUFFERED": "1", **self._base_env, **spec.env}
        return await asyncio.create_subprocess_exec(
            *spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            # Own session and process group: Ctrl-C reaches only the supervisor, which then
            # stops the children in order, and signals reach a child's own children too.
            start_new_session=True,
            preexec_fn=die_with_supervisor_hook(),
        )

    async def _announce_comeback(self, child: _Child, process: asyncio.subprocess.Process) -> None:
        assert child.spec.readiness is not None
        while process.returncode is None and not self.stopping:
            answer = await self._prober.check(child.spec.readiness)
            if answer.ready:
                self._console.say(f"{child.spec.name} is {answer.detail} again (pid {process.pid})")
                return
            await asyncio.sleep(_READY_POLL_SECONDS)

    async def _check(self, child: _Child) -> Readiness:
        if child.spec.readiness is not None:
            return await self._prober.check(child.spec.readiness)
        if _pid_if_running(child.process):
            return Readiness(ready=True, detail="running")
        return Readiness(ready=False, detail="not running")

    async def _pump_output(self, name: str, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        pending = b""
        while chunk := await process.stdout.read(_MAX_LINE_BYTES):
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self._console.line(name, _decode(line))
            if len(pending) >= _MAX_LINE_BYTES:
                self._console.line(name, _decode(pending))
                pending = b""
        if pending:
            self._console.line(name, _decode(pending))

    async def _end(self, process: asyncio.subprocess.Process, grace: float) -> None:
        _signal_group(process, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=grace)
        except TimeoutError:
            _signal_group(process, signal.SIGKILL)
            await process.wait()

    def _write_state(self) -> None:
        if self._state_file and not self._stopped:
            write_state(self._state_file, processes=self.snapshot(), resources=self._resources)

    def _report_crash(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            self._console.say(f"supervising {task.get_name()} failed: {error!r}")


async def finish_even_if_cancelled(task: asyncio.Task[None]) -> None:
    """Await `task`; if the caller is cancelled meanwhile, let the task finish, then re-raise."""
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            await task
        raise


def _pid_if_running(process: asyncio.subprocess.Process | None) -> int | None:
    if process is None or process.returncode is not None:
        return None
    return process.pid


def _signal_group(process: asyncio.subprocess.Process | None, signum: signal.Signals) -> None:
    """Signal the child's whole process group (its pid, as it leads its own session)."""
    if process is None or process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _decode(line: bytes) -> str:
    return line.rstrip(b"\r").decode(errors="replace")
