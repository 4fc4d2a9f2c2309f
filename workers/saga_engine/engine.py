"""The saga engine's runner loop: claim a due execution, run its states one by one, commit
each step before the next starts, and give the execution up when it must wait.

A Task that was in flight when its runner died runs again on the runner that takes over
(at-least-once, as Step Functions runs Tasks); handlers are idempotent by (order_id, step).
An execution runs on the definition it was begun on, as Step Functions pins it: a new engine
begins new executions on its own definition and finishes older ones on theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.notifications import Wakeups
from workers.saga_engine.asl.errors import TIMEOUT
from workers.saga_engine.asl.interpreter import (
    Ended,
    Event,
    Interpreter,
    Paused,
    Position,
    TaskInvoker,
    context_object,
)
from workers.saga_engine.asl.machine import StateMachine
from workers.saga_engine.step_metrics import observe_step
from workers.saga_engine.store import Claim, ExecutionStore, LeaseLost
from workers.saga_engine.tracing import record_step, state_span

log = logging.getLogger(__name__)

# A paused execution's local wake-up comes this much after its due time, so the database's
# clock (which the claim compares with) has passed it too.
_DUE_MARGIN_SECONDS = 0.005


@dataclass(frozen=True)
class EngineOptions:
    """How one engine instance claims and holds executions (of one state machine only)."""

    owner: str
    state_machine_name: str = "checkout"
    lease_seconds: float = 30.0
    poll_interval_seconds: float = 1.0
    max_concurrent_executions: int = 8


def default_owner() -> str:
    """A runner id that is unique per process start, readable in the history."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class SagaEngine:
    """Runs executions of one state machine from the store until asked to stop."""

    def __init__(
        self,
        store: ExecutionStore,
        machine: StateMachine,
        invoker: TaskInvoker,
        options: EngineOptions,
    ) -> None:
        self._store = store
        self._machine = machine
        # Definitions older executions were begun on, read from the store once each.
        self._pinned: dict[str, StateMachine] = {machine.digest: machine}
        self._invoker = invoker
        self._options = options
        self._stopping = asyncio.Event()
        # The claimer is woken per execution started (a LISTEN on the starters' NOTIFY, wired by
        # the process), when a retry or Wait it paused comes due, when a driver frees room, and
        # when the engine stops; the poll finds the rest (other engines' pauses, expired leases,
        # starts a lost LISTEN missed). A wake while it is busy claiming is kept for its wait.
        self.wakeups = Wakeups(keep_one=True)

    @classmethod
    def on(
        cls,
        engine: AsyncEngine,
        machine: StateMachine,
        invoker: TaskInvoker,
        options: EngineOptions,
    ) -> SagaEngine:
        """An engine over the saga tables reached through `engine`."""
        return cls(ExecutionStore(engine), machine, invoker, options)

    def stop(self) -> None:
        """Ask every driver to finish its current step, commit it, release and return."""
        self._stopping.set()
        self.wakeups.wake_all()

    async def run(self, grace_seconds: float = 10.0) -> None:
        """Run until `stop()`: one claimer leases due executions while fewer than
        `max_concurrent_executions` are held, each driven by a task of its own (its Tasks are
        awaited, so a held execution costs a coroutine, not a thread). On stop, each driver
        commits its step and releases; past the grace, steps still in flight are cut."""
        held: set[asyncio.Task[None]] = set()
        limit = self._options.max_concurrent_executions

        def done(driver: asyncio.Task[None]) -> None:
            was_full = len(held) >= limit
            held.discard(driver)
            if not driver.cancelled() and driver.exception() is not None:
                log.error("saga execution driver failed", exc_info=driver.exception())
            if was_full:
                self.wakeups.wake_one()  # the claimer waits for room

        while not self._stopping.is_set():
            claim = None
            if len(held) < limit:
                try:
                    claim = await self._claim()
                except Exception:
                    log.exception("saga engine could not claim; trying again")
            if claim is None:
                # Nothing due, or no room: woken by a start's NOTIFY or a driver's end, else
                # the poll finds retries and waits that came due.
                await self.wakeups.wait(self._options.poll_interval_seconds)
                continue
            driver = asyncio.create_task(self._hold(claim), name=f"saga:{claim.name}")
            held.add(driver)
            driver.add_done_callback(done)
        if held:
            _, pending = await asyncio.wait(set(held), timeout=grace_seconds)
            for driver in pending:
                driver.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def run_until_idle(self) -> None:
        """Drive due executions one after another until none is due (for tests and tools)."""
        while await self.run_one():
            pass

    async def run_one(self) -> bool:
        """Claim one due execution and drive it until it waits or ends; False if none was due."""
        claim = await self._claim()
        if claim is None:
            return False
        await self._hold(claim)
        return True

    async def _claim(self) -> Claim | None:
        return await self._store.claim(
            state_machine=self._options.state_machine_name,
            owner=self._options.owner,
            lease_seconds=self._options.lease_seconds,
        )

    async def _hold(self, claim: Claim) -> None:
        """Drive `claim` while renewing its lease; a lost lease abandons the step."""
        driver = asyncio.create_task(self._drive(claim))
        renewer = asyncio.create_task(self._renew(claim, driver))
        try:
            await driver
        except LeaseLost:
            log.warning("lost the lease on %s; another runner carries on", claim.name)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling() == 0:
                # Only the driver was cancelled, by the renewer: the lease is gone.
                log.warning("lost the lease on %s; another runner carries on", claim.name)
                return
            if not driver.done():
                driver.cancel()
                await asyncio.gather(driver, return_exceptions=True)
            # Cut short (shutdown past its grace): hand the execution to another runner now
            # rather than after the lease expires.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._store.release(claim))
            raise
        finally:
            renewer.cancel()
            await asyncio.gather(renewer, return_exceptions=True)

    async def _renew(self, claim: Claim, driver: asyncio.Task[None]) -> None:
        interval = self._options.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self._store.renew(claim, lease_seconds=self._options.lease_seconds)
            except LeaseLost:
                driver.cancel()
                return
            except Exception:
                log.exception("could not renew the lease on %s; trying again", claim.name)

    async def _machine_for(self, claim: Claim) -> StateMachine:
        """The definition `claim` was begun on; this engine's own for one not begun yet."""
        digest = claim.definition_digest
        if claim.position is None or digest is None:
            return self._machine
        machine = self._pinned.get(digest)
        if machine is None:
            machine = await self._store.definition(digest)
            if machine is None:
                # Begun before the engine stored definitions: nothing else to run it on.
                log.warning(
                    "execution %s began on definition %s, which was never stored; "
                    "it goes on with %s",
                    claim.name,
                    digest,
                    self._machine.digest,
                )
                return self._machine
            self._pinned[digest] = machine
        return machine

    async def _drive(self, claim: Claim) -> None:
        machine = await self._machine_for(claim)
        started = time.monotonic()

        def now() -> datetime:
            # The database's clock, carried forward locally: leases and due times are
            # compared in the database, so deadlines are measured on the same clock.
            return claim.database_now + timedelta(seconds=time.monotonic() - started)

        execution = context_object(
            execution_id=str(claim.execution_id),
            name=claim.name,
            data=claim.input,
            started_at=claim.started_at,
            machine_name=self._options.state_machine_name,
        )
        journal = _Journal(self._store, claim, machine)
        interpreter = Interpreter(machine, self._invoker, clock=now, on_scheduled=journal.scheduled)
        if claim.previous_owner is not None:
            journal.events.append(
                Event("ExecutionResumed", None, {"expired_lease_of": claim.previous_owner})
            )
        position = claim.position
        if position is None:
            if machine.timeout_seconds is not None:
                journal.deadline = claim.started_at + timedelta(seconds=machine.timeout_seconds)
            position, entered = interpreter.start(claim.input)
            journal.moved(position, [entered])
        deadline = journal.deadline
        while True:
            remaining = None if deadline is None else (deadline - now()).total_seconds()
            if remaining is not None and remaining <= 0:
                await self._time_out(journal, position)
                return
            started = time.perf_counter()
            with state_span(claim, position) as span:
                try:
                    step = await asyncio.wait_for(interpreter.step(position, execution), remaining)
                except TimeoutError:
                    span.set_attribute("saga.error", TIMEOUT)
                    await self._time_out(journal, position)
                    return
                record_step(span, step)
            observe_step(position.state, step, time.perf_counter() - started)
            journal.events.extend(step.events)
            outcome = step.outcome
            if isinstance(outcome, Ended):
                await self._end(journal, outcome)
                return
            if isinstance(outcome, Paused):
                journal.moved(outcome.position, [])
                await journal.write(run_at=outcome.until, release=True)
                due_in = (outcome.until - now()).total_seconds() + _DUE_MARGIN_SECONDS
                asyncio.get_running_loop().call_later(max(0.0, due_in), self.wakeups.wake_one)
                return
            position, entered = interpreter.enter(outcome)
            journal.moved(position, [entered])
            if self._stopping.is_set():
                await journal.write(release=True)
                return

    async def _end(self, journal: _Journal, outcome: Ended) -> None:
        if outcome.status == "SUCCEEDED":
            journal.events.append(Event("ExecutionSucceeded", None, {"output": outcome.output}))
        else:
            journal.events.append(
                Event("ExecutionFailed", None, {"error": outcome.error, "cause": outcome.cause})
            )
        await journal.finish(
            status=outcome.status, output=outcome.output, error=outcome.error, cause=outcome.cause
        )
        log.info("execution %s %s", journal.claim.name, outcome.status)

    async def _time_out(self, journal: _Journal, position: Position) -> None:
        cause = f"the execution ran past its TimeoutSeconds in state {position.state}"
        journal.events.append(Event("ExecutionTimedOut", position.state, {"error": TIMEOUT}))
        await journal.finish(status="TIMED_OUT", error=TIMEOUT, cause=cause)
        log.info("execution %s TIMED_OUT", journal.claim.name)


class _Journal:
    """What one held execution did since its last commit, written at the next point that needs
    it: before a Task is called (the position and every event so far, then TaskScheduled, in one
    statement), when it pauses, stops or ends. Choice, Pass and the moves between states are
    pure functions of committed input, so a runner that dies before writing them redoes them
    the same way; a Task whose result was not yet written runs again (at-least-once, and every
    handler is idempotent), exactly as one cut off mid-call does."""

    def __init__(self, store: ExecutionStore, claim: Claim, machine: StateMachine) -> None:
        self._store = store
        self.claim = claim
        self._machine = machine
        self.deadline = claim.deadline
        self._begun = claim.position is not None
        self._position: Position | None = None  # moved to, not written yet
        self.events: list[Event] = []
        # A Parallel's branches schedule their Tasks concurrently: one write at a time, and
        # those scheduled in the same turn of the loop in one write.
        self._lock = asyncio.Lock()
        self._group: asyncio.Future[None] | None = None

    def moved(self, position: Position, events: list[Event]) -> None:
        """The execution is at `position` now (in memory until the next write)."""
        self._position = position
        self.events.extend(events)

    async def scheduled(self, event: Event) -> None:
        """A Task is about to be called: commit where the execution is and that it is called.
        Tasks scheduled together (a Parallel's branches) share one write: the first waits a
        turn of the loop for the others, and each returns once the write holding it is done."""
        self.events.append(event)
        if self._group is None:
            self._group = asyncio.ensure_future(self._write_group())
        await asyncio.shield(self._group)

    async def _write_group(self) -> None:
        await asyncio.sleep(0)  # the other branches reach their own scheduled() meanwhile
        async with self._lock:
            self._group = None
            await self.write()

    async def write(self, *, run_at: datetime | None = None, release: bool = False) -> None:
        """Commit the position and the events so far (due at `run_at`, else now)."""
        events, self.events = self.events, []
        if not self._begun:
            assert self._position is not None  # an unbegun execution was moved to its start
            await self._store.begin(
                self.claim,
                self._position,
                machine=self._machine,
                deadline=self.deadline,
                events=events,
                run_at=run_at,
                release=release,
            )
            self._begun = True
        elif self._position is not None:
            await self._store.advance(
                self.claim, self._position, events=events, run_at=run_at, release=release
            )
        elif release:
            await self._store.release(self.claim, events)
        elif events:
            await self._store.append(self.claim, events)
        self._position = None

    async def finish(
        self,
        *,
        status: str,
        output: Any = None,
        error: str | None = None,
        cause: str | None = None,
    ) -> None:
        """Close the execution with everything not yet written."""
        async with self._lock:
            events, self.events = self.events, []
            await self._store.finish(
                self.claim,
                status=status,
                events=events,
                output=output,
                error=error,
                cause=cause,
            )
