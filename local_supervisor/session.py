"""One supervised run: bring the stack up, report it, supervise it, stop it on a signal."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from local_supervisor.console import PrefixedConsole
from local_supervisor.processes import ProcessSpec, Supervisor

# What the supervisor prints (followed by " in N.Ns") once every process is ready; launchers wait
# for it (local_supervisor.launcher).
READY_MARK = "all services SERVING"


class StartupError(Exception):
    """The stack could not be brought up; the message says why, for the operator."""


@dataclass(frozen=True)
class StackPlan:
    """What to supervise once shared resources are up, and the resources to report."""

    services: Sequence[ProcessSpec]
    resources: Mapping[str, str] = field(default_factory=dict)
    next_steps: Sequence[str] = ()  # said once everything is SERVING, e.g. a curl to try


PrepareStack = Callable[[Supervisor], AbstractAsyncContextManager[StackPlan]]


@dataclass
class _Phase:
    steady: bool = False
    signalled: bool = False


def quiet_grpc_fork() -> None:
    """Turn off gRPC's fork handlers in this process (call before grpc is first imported).

    Children are exec'd right after fork, so the handlers only print a warning per spawn.
    Core's own info lines (e.g. a GOAWAY from a service that stops) are noise here too.
    """
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run `main` on uvloop when it is installed, else on the standard event loop."""
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main)


def mask_password(url: str) -> str:
    """Replace the password in a URL with ***, leaving URLs without one untouched."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    credentials, _, host = parts.netloc.rpartition("@")
    user = credentials.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


async def supervise(
    prepare: PrepareStack, *, supervisor: Supervisor, console: PrefixedConsole, ready_timeout: float
) -> int:
    """Bring the stack up and keep it running until SIGINT or SIGTERM; return the exit code."""
    started = time.monotonic()
    stop = asyncio.Event()
    phase = _Phase()
    body = asyncio.create_task(
        _run_stack(prepare, supervisor, console, stop, phase, ready_timeout, started)
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, _on_signal, signum, body, stop, phase, supervisor, console)
    try:
        return await body
    except asyncio.CancelledError:
        if phase.signalled and body.cancelled():
            console.say("stopped before the stack was up")
            return 0
        raise
    except StartupError as failure:
        console.say(str(failure))
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await supervisor.stop()


def _on_signal(
    signum: signal.Signals,
    body: asyncio.Task[int],
    stop: asyncio.Event,
    phase: _Phase,
    supervisor: Supervisor,
    console: PrefixedConsole,
) -> None:
    name = signal.Signals(signum).name
    if phase.signalled:
        console.say(f"{name} again: killing what is still running")
        supervisor.hurry()
        return
    phase.signalled = True
    console.say(f"{name} received; stopping")
    stop.set()
    if not phase.steady:
        body.cancel()


async def _run_stack(
    prepare: PrepareStack,
    supervisor: Supervisor,
    console: PrefixedConsole,
    stop: asyncio.Event,
    phase: _Phase,
    ready_timeout: float,
    started: float,
) -> int:
    async with prepare(supervisor) as plan:
        try:
            supervisor.publish_resources(plan.resources)
            supervisor.launch(plan.services)
            names = [spec.name for spec in plan.services]
            answers = await supervisor.wait_until_ready(names, within=ready_timeout)
            restarts = {state.name: state.restarts for state in supervisor.snapshot()}
            late = [
                f"{name} ({answer.detail}, {restarts[name]} restarts)"
                for name, answer in answers.items()
                if not answer.ready
            ]
            if late:
                console.say(f"not SERVING after {ready_timeout:g}s: {', '.join(late)}; stopping")
                return 1
            _report_stack(supervisor, console, plan)
            console.say(f"{READY_MARK} in {time.monotonic() - started:.1f}s")
            for step in plan.next_steps:
                console.say(step)
            phase.steady = True
            await stop.wait()
            return 0
        finally:
            phase.steady = True  # from here a signal no longer cancels: stopping is under way
            await supervisor.stop()


def _report_stack(supervisor: Supervisor, console: PrefixedConsole, plan: StackPlan) -> None:
    rows = [("process", "address", "pid")]
    rows += [
        (state.name, state.address or "-", str(state.pid or "-")) for state in supervisor.snapshot()
    ]
    name_width = max(len(row[0]) for row in rows)
    address_width = max(len(row[1]) for row in rows)
    for name, address, pid in rows:
        console.say(f"{name.ljust(name_width)}  {address.ljust(address_width)}  {pid}")
    label_width = max((len(label) for label in plan.resources), default=0)
    for label, value in plan.resources.items():
        console.say(f"{label.ljust(label_width)}  {value}")
