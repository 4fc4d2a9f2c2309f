"""Fault injectors driven by the load's progress: SIGKILLs of supervised processes, PSP fault
phases through its admin API, Redis restarts and poison messages. Each records what it did."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import asyncpg  # type: ignore[import-untyped]
import httpx
from sqlalchemy.ext.asyncio import create_async_engine

from marketplace_platform.queues.definitions import DEFAULT_RULES_FILE, load_queue_definitions
from marketplace_platform.queues.postgres import PostgresQueues
from marketplace_platform.settings import to_asyncpg_url
from verification.plan import Faults, Kill, Poison, PspPhase
from verification.progress import ProgressLine
from verification.snapshot import InjectedPoison
from verification.stack import REPO, ChaosStack

log = logging.getLogger("verification.faults")
PID_WAIT = 30.0  # a process being restarted gets this long to come back before a kill is skipped
# Not JSON, so no consumer can read an event out of it: every receive fails until the queue
# parks it in its DLQ.
POISON_BODY = "chaos poison: this message is not an event"
# How long a phase meant for confirmed orders waits for the first one before it starts anyway.
FIRST_CONFIRMED_WAIT = 120.0


@dataclass(frozen=True)
class AppliedPhase:
    """A PSP fault phase as it happened: at which share, what, and for how long."""

    share: float
    faults: Faults
    lasts_seconds: float | None = None
    why: str = ""


@dataclass
class FaultLog:
    """Every fault injected, in order, with when (as load progress) it happened."""

    kills: list[tuple[float, str, int]] = field(default_factory=list)  # progress, name, pid
    skipped_kills: list[str] = field(default_factory=list)
    psp_phases: list[AppliedPhase] = field(default_factory=list)
    redis_restarts: list[float] = field(default_factory=list)
    poison: list[InjectedPoison] = field(default_factory=list)
    load_samples: list[tuple[float, int]] = field(default_factory=list)  # seconds, done


class Progress:
    """The share of checkouts finished, and a way to wait for a given share; each step is
    shown on a live progress line (verification.progress) unless `line` is False."""

    def __init__(self, total: int, *, label: str = "checkouts", line: bool = True) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._changed = asyncio.Condition()
        self.line = ProgressLine(label, total) if line else None

    @property
    def share(self) -> float:
        """Finished checkouts / planned checkouts."""
        return self.done / self.total

    async def advance(self) -> None:
        """One more checkout finished."""
        async with self._changed:
            self.done += 1
            self._changed.notify_all()
        if self.line is not None:
            self.line.update(self.done)

    async def reach(self, share: float) -> None:
        """Return once at least `share` of the checkouts finished."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.share >= share)


async def _pid_of(stack: ChaosStack, name: str) -> int | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PID_WAIT
    while loop.time() < deadline:
        pid = stack.processes().get(name)
        if pid:
            return int(pid)
        await asyncio.sleep(0.2)
    return None


async def sigkill(stack: ChaosStack, name: str) -> int | None:
    """SIGKILL the named supervised process now; its pid, or None when it was not running."""
    pid = await _pid_of(stack, name)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    return pid


async def run_kills(
    stack: ChaosStack, kills: Sequence[Kill], progress: Progress, faults: FaultLog
) -> None:
    """SIGKILL each planned process when the load reaches its moment."""
    for kill in kills:
        await progress.reach(kill.at_progress)
        pid = await sigkill(stack, kill.target)
        if pid is None:
            faults.skipped_kills.append(f"{kill.target} (no pid within {PID_WAIT:.0f}s)")
            continue
        faults.kills.append((progress.share, kill.target, pid))
        log.info("SIGKILL %s (pid %d) at %.0f%%", kill.target, pid, progress.share * 100)


async def set_psp_faults(psp: httpx.AsyncClient, faults: Faults) -> None:
    """Put `faults` in force at the PSP simulator (an empty dict clears them)."""
    for _ in range(50):
        try:
            answer = await psp.put("/admin/faults", json=faults, timeout=5)
            if answer.status_code == 200:
                return
        except httpx.TransportError:
            pass  # the PSP itself may be restarting after a kill
        await asyncio.sleep(0.2)
    raise RuntimeError(f"the PSP simulator refused its faults {faults}")


async def run_psp_phases(
    psp: httpx.AsyncClient,
    phases: Sequence[PspPhase],
    progress: Progress,
    faults: FaultLog,
    *,
    any_confirmed: Callable[[], Awaitable[bool]],
) -> None:
    """Change the PSP's faults at each planned moment; lift a timed phase after its time."""
    for phase in phases:
        await progress.reach(phase.at_progress)
        if phase.after_first_confirmed:
            await _first_confirmed(any_confirmed)
        await set_psp_faults(psp, phase.faults)
        faults.psp_phases.append(
            AppliedPhase(progress.share, phase.faults, phase.lasts_seconds, phase.why)
        )
        log.info("PSP faults at %.0f%%: %s%s", progress.share * 100, phase.faults or "none",
                 f" for {phase.lasts_seconds:.0f}s" if phase.lasts_seconds else "")  # fmt: skip
        if phase.lasts_seconds:
            # Wall time, not load progress: the outage must outlast the run's deadlines even
            # when the load finishes meanwhile.
            await asyncio.sleep(phase.lasts_seconds)
            await set_psp_faults(psp, {})


@asynccontextmanager
async def confirmed_probe(
    stack: ChaosStack, customer_prefix: str
) -> AsyncIterator[Callable[[], Awaitable[bool]]]:
    """For the block, a check of whether any order of the run's customers is CONFIRMED yet."""
    db = await asyncpg.connect(stack.database_url)

    async def any_confirmed() -> bool:
        found = await db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM checkout.orders WHERE customer_id LIKE $1"
            " AND status IN ('CONFIRMED', 'SHIPPED'))",
            customer_prefix + "%",
        )
        return bool(found)

    try:
        yield any_confirmed
    finally:
        await db.close()


async def _first_confirmed(any_confirmed: Callable[[], Awaitable[bool]]) -> None:
    """Wait until some order of the run is CONFIRMED (at most FIRST_CONFIRMED_WAIT seconds)."""
    deadline = time.monotonic() + FIRST_CONFIRMED_WAIT
    while not await any_confirmed():
        if time.monotonic() > deadline:
            log.warning("no order confirmed within %.0fs; the phase starts anyway",
                        FIRST_CONFIRMED_WAIT)  # fmt: skip
            return
        await asyncio.sleep(0.5)


async def run_redis_restarts(
    stack: ChaosStack, moments: Sequence[float], progress: Progress, faults: FaultLog
) -> None:
    """Kill the embedded Redis (the supervisor restarts it) at each planned moment."""
    for moment in moments:
        await progress.reach(moment)
        if await sigkill(stack, "redis") is not None:
            faults.redis_restarts.append(progress.share)
            log.info("Redis killed at %.0f%%", progress.share * 100)


async def inject_poison(stack: ChaosStack, queue: str) -> InjectedPoison:
    """Put one message no consumer can process on `queue`, through the local queue adapter."""
    engine = create_async_engine(to_asyncpg_url(stack.database_url), pool_size=1)
    try:
        queues = PostgresQueues(engine, load_queue_definitions(REPO / DEFAULT_RULES_FILE))
        message_id = await queues.send(queue, POISON_BODY)
    finally:
        await engine.dispose()
    return InjectedPoison(queue=queue, message_id=message_id)


async def run_poison(
    stack: ChaosStack, poison: Sequence[Poison], progress: Progress, faults: FaultLog
) -> None:
    """Put each planned poison message on its queue when the load reaches its moment."""
    for planned in poison:
        await progress.reach(planned.at_progress)
        injected = await inject_poison(stack, planned.queue)
        faults.poison.append(injected)
        log.info("poison message %s on %s at %.0f%%", injected.message_id, injected.queue,
                 progress.share * 100)  # fmt: skip


def count_by_target(faults: FaultLog) -> dict[str, int]:
    """Kills per process name."""
    counts: dict[str, int] = {}
    for _, name, _ in faults.kills:
        counts[name] = counts.get(name, 0) + 1
    return counts
