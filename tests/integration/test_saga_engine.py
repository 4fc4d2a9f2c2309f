"""The saga engine against a real PostgreSQL: idempotent start by name, lease fencing, several
engines racing over many executions, durable retries, the overall timeout, and executions that
finish on the definition they began on across a deploy."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.notifications import Listener
from marketplace_platform.saga.local import EXECUTIONS_CHANNEL, LocalSagaStarter
from workers.saga_engine.asl.interpreter import Position
from workers.saga_engine.asl.machine import StateMachine
from workers.saga_engine.engine import EngineOptions, SagaEngine
from workers.saga_engine.store import ExecutionStore, LeaseLost
from workers.saga_engine.task_invoker import InProcessTaskInvoker, TaskHandler

WITHIN = 60.0


pytestmark = pytest.mark.engine(db_pool_size=20)


@pytest.fixture
def starter(engine: AsyncEngine, machine_name: str) -> LocalSagaStarter:
    return LocalSagaStarter(engine, state_machine=machine_name)


def task(resource: str, step: str, **extra: Any) -> dict[str, Any]:
    return {
        "Type": "Task",
        "Resource": "${" + resource + "}",
        "Parameters": {"step": step, "order_id.$": "$$.Execution.Name"},
        "ResultPath": f"$.{step}",
        **extra,
    }


def saga_engine(
    engine: AsyncEngine,
    machine_name: str,
    definition: dict[str, Any],
    handlers: dict[str, TaskHandler],
    *,
    owner: str | None = None,
    lease_seconds: float = 10.0,
    slots: int = 4,
    poll_interval_seconds: float = 0.02,
) -> SagaEngine:
    invoker = InProcessTaskInvoker(handlers, ThreadPoolExecutor(slots))
    options = EngineOptions(
        owner=owner or f"engine-{uuid.uuid4().hex[:6]}",
        state_machine_name=machine_name,
        lease_seconds=lease_seconds,
        poll_interval_seconds=poll_interval_seconds,
        max_concurrent_executions=slots,
    )
    return SagaEngine.on(engine, StateMachine.from_definition(definition), invoker, options)


async def wait_for_status(
    starter: LocalSagaStarter, names: list[str], *, within: float = WITHIN
) -> dict[str, str]:
    deadline = time.monotonic() + within
    while True:
        statuses = {}
        for name in names:
            description = await starter.describe(name)
            assert description is not None
            statuses[name] = description.status
        if "RUNNING" not in statuses.values() or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(0.05)


async def test_starting_under_an_existing_name_returns_that_execution(
    starter: LocalSagaStarter,
) -> None:
    name = str(uuid.uuid4())
    payload = {"order_id": name, "lines": [{"sku": "MUG-1", "quantity": 2}]}
    results = await asyncio.gather(
        *(starter.start_execution(name=name, payload=payload) for _ in range(20))
    )
    assert len({result.execution_id for result in results}) == 1
    assert sorted(result.already_existed for result in results) == [False] + [True] * 19
    history = await starter.history(name)
    assert [event.type for event in history] == ["ExecutionStarted"]
    description = await starter.describe(name)
    assert description is not None
    assert (description.status, description.input) == ("RUNNING", payload)


async def test_a_runner_whose_lease_was_taken_over_cannot_commit(
    engine: AsyncEngine, machine_name: str
) -> None:
    store = ExecutionStore(engine)
    starter = LocalSagaStarter(engine, state_machine=machine_name)
    name = str(uuid.uuid4())
    await starter.start_execution(name=name, payload={"order_id": name})
    first = await store.claim(state_machine=machine_name, owner="first", lease_seconds=30)
    assert first is not None
    assert first.name == name
    # Leased: nobody else gets it.
    assert await store.claim(state_machine=machine_name, owner="second", lease_seconds=30) is None
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE saga.executions SET lease_expires_at = now() - interval '1 second' "
                "WHERE name = :name"
            ),
            {"name": name},
        )
    second = await store.claim(state_machine=machine_name, owner="second", lease_seconds=30)
    assert second is not None
    assert second.previous_owner == "first"
    position = Position("Next", {}, second.database_now)
    with pytest.raises(LeaseLost):
        await store.advance(first, position, events=[])
    await store.advance(second, position, events=[])
    description = await starter.describe(name)
    assert description is not None
    assert description.current_state == "Next"


@dataclass(frozen=True)
class Call:
    order_id: str
    step: str
    started: float
    ended: float


class CallLog:
    """Every handler call with its time span, from any thread of any engine."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._failed_once: set[tuple[str, str]] = set()

    def handler(self, *, fail_first: bool = False) -> TaskHandler:
        def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
            started = time.monotonic()
            time.sleep(random.uniform(0, 0.01))  # the handler's work, widened to race
            order_id, step = event["order_id"], event["step"]
            with self._lock:
                self.calls.append(Call(order_id, step, started, time.monotonic()))
                first_time = (order_id, step) not in self._failed_once
                self._failed_once.add((order_id, step))
            if fail_first and first_time:
                raise RetryableError("first attempt fails")
            return {"ok": step}

        return run


class RetryableError(Exception):
    pass


RACE_DEFINITION = {
    "StartAt": "Price",
    "States": {
        "Price": task("PriceFunctionArn", "price", Next="Checks"),
        "Checks": {
            "Type": "Parallel",
            "Branches": [
                {
                    "StartAt": "Tax",
                    "States": {"Tax": task("RecordFunctionArn", "tax", End=True)},
                },
                {
                    "StartAt": "Fraud",
                    "States": {"Fraud": task("RecordFunctionArn", "fraud", End=True)},
                },
            ],
            "ResultPath": "$.checks",
            "Next": "Authorize",
        },
        "Authorize": task(
            "FlakyFunctionArn",
            "authorize",
            Retry=[{"ErrorEquals": ["RetryableError"], "IntervalSeconds": 0.05}],
            Next="Confirm",
        ),
        "Confirm": task("RecordFunctionArn", "confirm", End=True),
    },
}


async def test_several_engines_never_run_one_execution_at_once_and_finish_each_once(
    engine: AsyncEngine, starter: LocalSagaStarter, machine_name: str
) -> None:
    log = CallLog()
    handlers = {
        "PriceFunctionArn": log.handler(),
        "RecordFunctionArn": log.handler(),
        "FlakyFunctionArn": log.handler(fail_first=True),
    }
    names = [str(uuid.uuid4()) for _ in range(40)]
    await asyncio.gather(
        *(starter.start_execution(name=name, payload={"order_id": name}) for name in names)
    )
    engines = [saga_engine(engine, machine_name, RACE_DEFINITION, handlers) for _ in range(3)]
    runs = [asyncio.create_task(saga_engine_run(e)) for e in engines]
    try:
        statuses = await wait_for_status(starter, names)
    finally:
        for running in engines:
            running.stop()
        await asyncio.gather(*runs)
    assert Counter(statuses.values()) == Counter({"SUCCEEDED": 40})

    by_order: dict[str, dict[str, list[Call]]] = defaultdict(lambda: defaultdict(list))
    for call in log.calls:
        by_order[call.order_id][call.step].append(call)
    owners: set[str] = set()
    for name in names:
        steps = by_order[name]
        assert {step: len(calls) for step, calls in steps.items()} == {
            "price": 1, "tax": 1, "fraud": 1, "authorize": 2, "confirm": 1,
        }  # fmt: skip
        # Each phase starts only after the previous one ended: no step of one execution ran
        # at the same time as another, whichever engine ran it.
        phases = [
            steps["price"],
            steps["tax"] + steps["fraud"],
            steps["authorize"][:1],
            steps["authorize"][1:],
            steps["confirm"],
        ]
        for before, after in itertools.pairwise(phases):
            assert max(c.ended for c in before) <= min(c.started for c in after), name
        history = await starter.history(name)
        assert [event.seq for event in history] == list(range(1, len(history) + 1))
        assert [event.type for event in history].count("ExecutionSucceeded") == 1
        assert history[-1].type == "ExecutionSucceeded"
        owners |= {event.owner for event in history if event.owner}
    assert len(owners) > 1, "the engines did not share the work, so nothing raced"


async def saga_engine_run(running: SagaEngine) -> None:
    await running.run(grace_seconds=10)


async def test_the_overall_timeout_ends_a_task_in_flight(
    engine: AsyncEngine, starter: LocalSagaStarter, machine_name: str
) -> None:
    release = threading.Event()

    def stuck(event: Any, context: Any) -> None:
        release.wait(30)

    definition = {
        "StartAt": "Stuck",
        "TimeoutSeconds": 1,
        "States": {"Stuck": task("StuckFunctionArn", "stuck", End=True)},
    }
    name = str(uuid.uuid4())
    await starter.start_execution(name=name, payload={})
    runner = saga_engine(engine, machine_name, definition, {"StuckFunctionArn": stuck}, slots=1)
    task_run = asyncio.create_task(runner.run())
    try:
        statuses = await wait_for_status(starter, [name], within=15)
    finally:
        release.set()
        runner.stop()
        await task_run
    assert statuses[name] == "TIMED_OUT"
    description = await starter.describe(name)
    assert description is not None
    assert description.error == "States.Timeout"
    assert (await starter.history(name))[-1].type == "ExecutionTimedOut"


async def test_the_overall_timeout_holds_across_restarts_while_waiting(
    engine: AsyncEngine, starter: LocalSagaStarter, machine_name: str
) -> None:
    definition = {
        "StartAt": "Long",
        "TimeoutSeconds": 1,
        "States": {"Long": {"Type": "Wait", "Seconds": 3600, "End": True}},
    }
    name = str(uuid.uuid4())
    await starter.start_execution(name=name, payload={})
    first = saga_engine(engine, machine_name, definition, {}, slots=1)
    first_run = asyncio.create_task(first.run())
    await _wait_for_event(starter, name, "WaitScheduled")
    first.stop()
    await first_run
    # A new engine (a restarted runner) finds the deadline passed long before the Wait's end.
    second = saga_engine(engine, machine_name, definition, {}, slots=1)
    second_run = asyncio.create_task(second.run())
    try:
        statuses = await wait_for_status(starter, [name], within=15)
    finally:
        second.stop()
        await second_run
    assert statuses[name] == "TIMED_OUT"


async def test_task_timeout_is_states_timeout_and_catchable(
    engine: AsyncEngine, starter: LocalSagaStarter, machine_name: str
) -> None:
    release = threading.Event()

    def slow(event: Any, context: Any) -> None:
        release.wait(30)

    definition = {
        "StartAt": "Slow",
        "States": {
            "Slow": task(
                "SlowFunctionArn",
                "slow",
                TimeoutSeconds=0.2,
                Catch=[{"ErrorEquals": ["States.Timeout"], "Next": "Compensate"}],
                End=True,
            ),
            "Compensate": {"Type": "Pass", "End": True},
        },
    }
    name = str(uuid.uuid4())
    await starter.start_execution(name=name, payload={})
    runner = saga_engine(engine, machine_name, definition, {"SlowFunctionArn": slow}, slots=1)
    run = asyncio.create_task(runner.run())
    try:
        statuses = await wait_for_status(starter, [name], within=15)
    finally:
        release.set()
        runner.stop()
        await run
    assert statuses[name] == "SUCCEEDED"
    description = await starter.describe(name)
    assert description is not None
    assert description.output["Error"] == "States.Timeout"


async def _wait_for_event(starter: LocalSagaStarter, name: str, kind: str) -> None:
    deadline = time.monotonic() + WITHIN
    while kind not in [event.type for event in await starter.history(name)]:
        assert time.monotonic() < deadline, f"no {kind} in {name}'s history"
        await asyncio.sleep(0.05)


def marking(path: str, version: str, **extra: Any) -> dict[str, Any]:
    """A Pass state that records which definition ran it."""
    return {"Type": "Pass", "Result": version, "ResultPath": f"$.{path}", **extra}


# Two deploys of one state machine: both stop at a Wait named Hold, then go on differently.
DEFINITION_V1 = {
    "StartAt": "Reserve",
    "States": {
        "Reserve": marking("reserved_by", "v1", Next="Hold"),
        "Hold": {"Type": "Wait", "Seconds": 1, "Next": "ConfirmV1"},
        "ConfirmV1": marking("confirmed_by", "v1", End=True),
    },
}
DEFINITION_V2 = {
    "StartAt": "Price",
    "States": {
        "Price": marking("priced_by", "v2", Next="Hold"),
        "Hold": {"Type": "Wait", "Seconds": 1, "Next": "ConfirmV2"},
        "ConfirmV2": marking("confirmed_by", "v2", End=True),
    },
}


async def test_an_execution_in_flight_over_a_deploy_finishes_on_the_definition_it_began_on(
    engine: AsyncEngine, starter: LocalSagaStarter, machine_name: str
) -> None:
    in_flight, new = str(uuid.uuid4()), str(uuid.uuid4())
    await starter.start_execution(name=in_flight, payload={})
    # The engine on v1 takes it as far as the Wait, then the deploy replaces it.
    await saga_engine(engine, machine_name, DEFINITION_V1, {}).run_until_idle()
    paused = await starter.describe(in_flight)
    assert paused is not None
    assert (paused.status, paused.current_state) == ("RUNNING", "Hold")

    await starter.start_execution(name=new, payload={})
    deployed = saga_engine(engine, machine_name, DEFINITION_V2, {})
    run = asyncio.create_task(deployed.run())
    try:
        statuses = await wait_for_status(starter, [in_flight, new], within=15)
    finally:
        deployed.stop()
        await run
    assert statuses == {in_flight: "SUCCEEDED", new: "SUCCEEDED"}
    assert await _outputs_and_states(starter, in_flight) == (
        {"reserved_by": "v1", "confirmed_by": "v1"},
        ["Reserve", "Hold", "ConfirmV1"],
    )
    assert await _outputs_and_states(starter, new) == (
        {"priced_by": "v2", "confirmed_by": "v2"},
        ["Price", "Hold", "ConfirmV2"],
    )
    assert await _pinned_definitions(engine, [in_flight, new]) == [DEFINITION_V1, DEFINITION_V2]


async def test_an_execution_whose_definition_was_never_stored_goes_on_with_the_current_one(
    engine: AsyncEngine, starter: LocalSagaStarter, machine_name: str
) -> None:
    name = str(uuid.uuid4())
    await starter.start_execution(name=name, payload={})
    await saga_engine(engine, machine_name, DEFINITION_V1, {}).run_until_idle()
    # As an execution begun before the engine stored definitions has it.
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE saga.executions SET definition_digest = 'unknown' WHERE name = :name"),
            {"name": name},
        )
    deployed = saga_engine(engine, machine_name, DEFINITION_V2, {})
    run = asyncio.create_task(deployed.run())
    try:
        statuses = await wait_for_status(starter, [name], within=15)
    finally:
        deployed.stop()
        await run
    assert statuses == {name: "SUCCEEDED"}
    _, states = await _outputs_and_states(starter, name)
    assert states == ["Reserve", "Hold", "ConfirmV2"]


async def _outputs_and_states(starter: LocalSagaStarter, name: str) -> tuple[Any, list[str]]:
    description = await starter.describe(name)
    assert description is not None
    entered = [e.state for e in await starter.history(name) if e.type.endswith("StateEntered")]
    return description.output, [state for state in entered if state is not None]


async def _pinned_definitions(engine: AsyncEngine, names: list[str]) -> list[Any]:
    query = text(
        "SELECT d.definition FROM saga.executions e"
        " JOIN saga.definitions d ON d.digest = e.definition_digest WHERE e.name = :name"
    )
    async with engine.connect() as connection:
        return [json.loads(await connection.scalar(query, {"name": n})) for n in names]


async def terminate_listeners(engine: AsyncEngine, channel: str) -> int:
    """Kill the server side of every LISTEN connection on `channel` (as a restart would)."""
    async with engine.begin() as connection:
        killed = await connection.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = :name AND datname = current_database()"
            ),
            {"name": f"listen:{channel}"},
        )
    return int(killed or 0)


async def test_an_idle_engine_runs_a_started_execution_at_once_and_again_after_losing_its_listen(
    engine: AsyncEngine, migrated_database_url: str, machine_name: str, starter: LocalSagaStarter
) -> None:
    # Idle slots would look again only after an hour: only the start's NOTIFY can wake them.
    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
    saga = saga_engine(engine, machine_name, definition, {}, poll_interval_seconds=3_600)
    listener = Listener(
        migrated_database_url, EXECUTIONS_CHANNEL, saga.wakeups, payload=machine_name
    )
    listening = asyncio.create_task(listener.run())
    running = asyncio.create_task(saga.run(grace_seconds=5))
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        first = str(uuid.uuid4())
        await starter.start_execution(name=first, payload={"order_id": first})
        assert await wait_for_status(starter, [first], within=20) == {first: "SUCCEEDED"}
        # The LISTEN connection dies (a database restart, a failover): the listener says so,
        # wakes the slots to look for what it may have missed, and listens again.
        assert await terminate_listeners(engine, EXECUTIONS_CHANNEL) >= 1
        deadline = time.monotonic() + 20
        while listener.connections < 2:
            assert time.monotonic() < deadline, "the listener did not listen again"
            await asyncio.sleep(0.05)
        second = str(uuid.uuid4())
        await starter.start_execution(name=second, payload={"order_id": second})
        assert await wait_for_status(starter, [second], within=20) == {second: "SUCCEEDED"}
    finally:
        saga.stop()
        await running
        listening.cancel()
        await asyncio.gather(listening, return_exceptions=True)


async def test_a_retry_back_off_wakes_the_engine_that_paused_it_when_it_comes_due(
    engine: AsyncEngine, machine_name: str, starter: LocalSagaStarter
) -> None:
    # The engine would look again only after an hour: only its own timer can bring the retry.
    attempts: list[float] = []

    def flaky(event: dict[str, Any], context: Any) -> dict[str, Any]:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            raise RuntimeError("the first attempt fails")
        return {"done": event["step"]}

    retried = task(
        "Flaky",
        "flaky",
        End=True,
        Retry=[{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 1, "MaxAttempts": 2}],
    )
    definition = {"StartAt": "Flaky", "States": {"Flaky": retried}}
    name = str(uuid.uuid4())
    await starter.start_execution(name=name, payload={"order_id": name})
    saga = saga_engine(
        engine, machine_name, definition, {"Flaky": flaky}, poll_interval_seconds=3_600
    )
    running = asyncio.create_task(saga.run(grace_seconds=5))
    try:
        assert await wait_for_status(starter, [name], within=20) == {name: "SUCCEEDED"}
    finally:
        saga.stop()
        await running
    assert len(attempts) == 2
    assert 0.9 < attempts[1] - attempts[0] < 10
