"""One step of a state machine: from a position (state + its input) to the next position, a
pause (retry back-off, Wait) or the end, with the history events it produced.

Pure apart from the task port: the durable runner commits each step before taking the next,
and `run` drives a machine in memory (Parallel branches, unit tests).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from workers.saga_engine.asl import choice, intrinsics, paths, policy
from workers.saga_engine.asl.errors import (
    BRANCH_FAILED,
    NO_CHOICE_MATCHED,
    RUNTIME,
    StatesError,
)
from workers.saga_engine.asl.machine import StateMachine

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]
Recorder = Callable[["Event"], Awaitable[None]]


class TaskInvoker(Protocol):
    """The port through which Task states run their Resource."""

    async def invoke(self, resource: str, payload: Any, *, timeout_seconds: float | None) -> Any:
        """Run `resource` with `payload`; raise StatesError(error, cause) when it fails."""


@dataclass(frozen=True)
class Position:
    """Where an execution stands: a state, its raw input, and that state's retry/wait memo."""

    state: str
    input: Any
    entered_at: datetime
    retries: tuple[int, ...] = ()
    wait_until: datetime | None = None

    def memo(self) -> dict[str, Any]:
        """The per-state bookkeeping as JSON, for the durable store."""
        return {
            "retries": list(self.retries),
            "wait_until": None if self.wait_until is None else self.wait_until.isoformat(),
        }

    @classmethod
    def restore(
        cls, state: str, data: Any, entered_at: datetime, memo: Mapping[str, Any] | None
    ) -> Position:
        """A position rebuilt from the store's columns."""
        memo = memo or {}
        wait_until = memo.get("wait_until")
        return cls(
            state=state,
            input=data,
            entered_at=entered_at,
            retries=tuple(memo.get("retries") or ()),
            wait_until=None if wait_until is None else datetime.fromisoformat(wait_until),
        )


@dataclass(frozen=True)
class Event:
    """One history event: its type, the state it concerns and a JSON payload."""

    type: str
    state: str | None
    payload: Any = None


@dataclass(frozen=True)
class Moved:
    """The state finished; the execution goes on at `next_state` with `input`."""

    next_state: str
    input: Any


@dataclass(frozen=True)
class Paused:
    """Nothing to do until `until` (a retry back-off or a Wait); then step `position` again."""

    position: Position
    until: datetime


@dataclass(frozen=True)
class Ended:
    """The execution is over."""

    status: Literal["SUCCEEDED", "FAILED"]
    output: Any = None
    error: str | None = None
    cause: str | None = None


Outcome = Moved | Paused | Ended


@dataclass(frozen=True)
class Step:
    """What one step decided, and the events to append to the history with it."""

    outcome: Outcome
    events: tuple[Event, ...] = field(default_factory=tuple)


def entered_event(machine: StateMachine, state: str, data: Any, prefix: str = "") -> Event:
    """The `<Type>StateEntered` event of entering `state` with `data`."""
    return Event(f"{machine.state(state)['Type']}StateEntered", prefix + state, {"input": data})


def context_object(
    *, execution_id: str, name: str, data: Any, started_at: datetime, machine_name: str
) -> dict[str, Any]:
    """The `$$` context object of an execution (the State part is added per step)."""
    return {
        "Execution": {
            "Id": execution_id,
            "Name": name,
            "Input": data,
            "StartTime": _iso(started_at),
        },
        "StateMachine": {"Id": machine_name, "Name": machine_name},
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


class Interpreter:
    """Runs the states of one machine; tasks go through the invoker port."""

    def __init__(
        self,
        machine: StateMachine,
        invoker: TaskInvoker,
        *,
        clock: Clock = _now,
        sleep: Sleep = asyncio.sleep,
        uniform: Callable[[float, float], float] = random.uniform,
        prefix: str = "",
        on_scheduled: Recorder | None = None,
    ) -> None:
        self.machine = machine
        # The durable runner commits TaskScheduled before the call, so a crash mid-task
        # shows in the history; in memory the event simply joins the step's events.
        self._on_scheduled = on_scheduled
        self._invoker = invoker
        self._clock = clock
        self._sleep = sleep
        self._uniform = uniform
        self._prefix = prefix

    def start(self, data: Any) -> tuple[Position, Event]:
        """The first position of an execution with input `data`, and its entered event."""
        start = self.machine.start_at
        return Position(start, data, self._clock()), entered_event(
            self.machine, start, data, self._prefix
        )

    def enter(self, moved: Moved) -> tuple[Position, Event]:
        """The position after a move, and its entered event."""
        return Position(moved.next_state, moved.input, self._clock()), entered_event(
            self.machine, moved.next_state, moved.input, self._prefix
        )

    async def run(self, data: Any, execution: Mapping[str, Any]) -> tuple[Ended, list[Event]]:
        """Drive the machine in memory from its start to its end, sleeping through pauses."""
        position, entered = self.start(data)
        events = [entered]
        while True:
            step = await self.step(position, execution)
            events.extend(step.events)
            outcome = step.outcome
            if isinstance(outcome, Ended):
                return outcome, events
            if isinstance(outcome, Paused):
                await self._sleep(max(0.0, (outcome.until - self._clock()).total_seconds()))
                position = outcome.position
            else:
                position, entered = self.enter(outcome)
                events.append(entered)

    async def step(self, position: Position, execution: Mapping[str, Any]) -> Step:
        """Run the state at `position` once and say what comes next."""
        state = self.machine.state(position.state)
        context = {
            **execution,
            "State": {
                "Name": position.state,
                "EnteredTime": _iso(position.entered_at),
                "RetryCount": sum(position.retries),
            },
        }
        events: list[Event] = []
        try:
            return await self._run_state(state, position, context, events)
        except StatesError as failure:
            return self._fail(state, position, failure, events)

    async def _run_state(
        self,
        state: Mapping[str, Any],
        position: Position,
        context: Mapping[str, Any],
        events: list[Event],
    ) -> Step:
        kind = state["Type"]
        raw = position.input
        name = self._prefix + position.state
        effective = _input_path(state, raw, context)
        if kind == "Fail":
            return Step(
                Ended("FAILED", error=state.get("Error"), cause=state.get("Cause")), tuple(events)
            )
        if kind == "Choice":
            next_state = choice.choose(state, effective, context)
            if next_state is None:
                raise StatesError(NO_CHOICE_MATCHED, f"no choice rule matched in {name}")
            output = _output_path(state, effective, context)
            events.append(Event(f"{kind}StateExited", name, {"output": output}))
            return Step(Moved(next_state, output), tuple(events))
        if kind == "Wait":
            if position.wait_until is None:
                until = self._wait_until(state, effective, context)
                events.append(Event("WaitScheduled", name, {"until": _iso(until)}))
                return Step(Paused(replace(position, wait_until=until), until), tuple(events))
            if self._clock() < position.wait_until:
                return Step(Paused(position, position.wait_until), tuple(events))
            return self._exit(state, position, _output_path(state, effective, context), events)
        if kind in ("Succeed",):
            return self._exit(state, position, _output_path(state, effective, context), events)
        if "Parameters" in state:
            effective = intrinsics.render(state["Parameters"], effective, context)
        if kind == "Pass":
            result = state.get("Result", effective)
        elif kind == "Task":
            scheduled = Event("TaskScheduled", name, {"parameters": effective})
            if self._on_scheduled is None:
                events.append(scheduled)
            else:
                await self._on_scheduled(scheduled)
            result = await self._invoker.invoke(
                str(state["Resource"]),
                effective,
                timeout_seconds=_optional_float(state.get("TimeoutSeconds")),
            )
            events.append(Event("TaskSucceeded", name, {"output": result}))
        else:  # Parallel
            result = await self._parallel(position.state, effective, context, events)
        if "ResultSelector" in state:
            result = intrinsics.render(state["ResultSelector"], result, context)
        output = paths.write(state.get("ResultPath", "$"), raw, result)
        return self._exit(state, position, _output_path(state, output, context), events)

    async def _parallel(
        self, name: str, data: Any, context: Mapping[str, Any], events: list[Event]
    ) -> list[Any]:
        execution = {key: value for key, value in context.items() if key != "State"}
        branches = [
            Interpreter(
                machine,
                self._invoker,
                clock=self._clock,
                sleep=self._sleep,
                uniform=self._uniform,
                prefix=f"{self._prefix}{name}/{index}/",
                on_scheduled=self._on_scheduled,
            )
            for index, machine in enumerate(self.machine.branches[name])
        ]
        finished = await asyncio.gather(*(branch.run(data, execution) for branch in branches))
        results: list[Any] = []
        for _, branch_events in finished:
            events.extend(branch_events)
        for ended, _ in finished:
            if ended.status != "SUCCEEDED":
                raise StatesError(ended.error or BRANCH_FAILED, ended.cause or "")
            results.append(ended.output)
        return results

    def _wait_until(
        self, state: Mapping[str, Any], data: Any, context: Mapping[str, Any]
    ) -> datetime:
        if "Seconds" in state:
            return self._clock() + timedelta(seconds=float(state["Seconds"]))
        if "SecondsPath" in state:
            seconds = paths.read(state["SecondsPath"], data, context)
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
                raise StatesError(RUNTIME, f"SecondsPath gave {seconds!r}, not seconds")
            return self._clock() + timedelta(seconds=float(seconds))
        stamp = state.get("Timestamp")
        if stamp is None and "TimestampPath" in state:
            stamp = paths.read(state["TimestampPath"], data, context)
        if not isinstance(stamp, str):
            raise StatesError(RUNTIME, "a Wait needs Seconds, SecondsPath, Timestamp(Path)")
        try:
            moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError as exc:
            raise StatesError(RUNTIME, f"not an ISO 8601 timestamp: {stamp!r}") from exc
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    def _exit(
        self, state: Mapping[str, Any], position: Position, output: Any, events: list[Event]
    ) -> Step:
        name = self._prefix + position.state
        events.append(Event(f"{state['Type']}StateExited", name, {"output": output}))
        if state["Type"] == "Succeed" or state.get("End"):
            return Step(Ended("SUCCEEDED", output=output), tuple(events))
        return Step(Moved(str(state["Next"]), output), tuple(events))

    def _fail(
        self,
        state: Mapping[str, Any],
        position: Position,
        failure: StatesError,
        events: list[Event],
    ) -> Step:
        name = self._prefix + position.state
        detail = {"error": failure.error, "cause": failure.cause}
        kind = state["Type"]
        events.append(Event(f"{kind}Failed", name, detail))
        retry = policy.decide_retry(
            state.get("Retry", []), failure.error, position.retries, self._uniform
        )
        if retry is not None:
            counts = list(position.retries) + [0] * (retry.index + 1 - len(position.retries))
            counts[retry.index] = retry.attempt
            until = self._clock() + timedelta(seconds=retry.delay_seconds)
            events.append(
                Event(
                    "RetryScheduled",
                    name,
                    {**detail, "attempt": retry.attempt, "delay_seconds": retry.delay_seconds},
                )
            )
            paused = replace(position, retries=tuple(counts))
            return Step(Paused(paused, until), tuple(events))
        catcher = policy.find_catcher(state.get("Catch", []), failure.error)
        if catcher is None:
            return Step(Ended("FAILED", error=failure.error, cause=failure.cause), tuple(events))
        error_output = {"Error": failure.error, "Cause": failure.cause}
        try:
            output = paths.write(catcher.get("ResultPath", "$"), position.input, error_output)
        except StatesError as broken:
            return Step(Ended("FAILED", error=broken.error, cause=broken.cause), tuple(events))
        events.append(Event("CatchMatched", name, {**detail, "next": catcher["Next"]}))
        events.append(Event(f"{kind}StateExited", name, {"output": output}))
        return Step(Moved(str(catcher["Next"]), output), tuple(events))


def _input_path(state: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> Any:
    if "InputPath" not in state:
        return data
    path = state["InputPath"]
    return {} if path is None else paths.read(path, data, context)


def _output_path(state: Mapping[str, Any], data: Any, context: Mapping[str, Any]) -> Any:
    if "OutputPath" not in state:
        return data
    path = state["OutputPath"]
    return {} if path is None else paths.read(path, data, context)


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
