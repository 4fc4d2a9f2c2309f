"""Redriving a parked saga execution on a real PostgreSQL with a real saga engine: a Task that
fails past its retries is caught into a Fail state (parked, FAILED); `redrive NAME` puts it
back RUNNING at that Task with the Task's input, fresh retries and an `ExecutionRedriven`
event, and the engine then runs it to its end. A running, succeeded or never-parked execution
is refused, and an unknown name is not found."""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.saga.local import LocalSagaStarter
from marketplace_platform.saga.redrive import NotRedrivable, Redriven, redrive_execution
from marketplace_platform.saga.tables import executions
from workers.saga_engine.asl.machine import StateMachine
from workers.saga_engine.cli import redrive_command
from workers.saga_engine.engine import EngineOptions, SagaEngine
from workers.saga_engine.settings import SagaEngineSettings
from workers.saga_engine.task_invoker import InProcessTaskInvoker

# Confirm fails (past one retry) while the gate is shut, and is caught into Parked.
PARKING_DEFINITION: dict[str, Any] = {
    "StartAt": "Reserve",
    "TimeoutSeconds": 600,
    "States": {
        "Reserve": {
            "Type": "Task",
            "Resource": "${ReserveFunctionArn}",
            "ResultPath": "$.reserved",
            "Next": "Confirm",
        },
        "Confirm": {
            "Type": "Task",
            "Resource": "${ConfirmFunctionArn}",
            "ResultPath": "$.confirmed",
            "Retry": [{"ErrorEquals": ["States.ALL"], "IntervalSeconds": 0, "MaxAttempts": 1}],
            "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Parked"}],
            "Next": "Done",
        },
        "Done": {"Type": "Succeed"},
        "Parked": {"Type": "Fail", "Error": "Parked", "Cause": "confirm failed past retries"},
    },
}


class Gate:
    """The Confirm handler's switch: shut, it fails; open, it confirms."""

    def __init__(self) -> None:
        self.open = False
        self.confirm_inputs: list[Any] = []
        self._lock = threading.Lock()

    def reserve(self, event: Any, context: Any) -> dict[str, Any]:
        return {"units": 2}

    def confirm(self, event: Any, context: Any) -> dict[str, Any]:
        with self._lock:
            self.confirm_inputs.append(event)
        if not self.open:
            raise RuntimeError("the confirmation service is down")
        return {"ok": True}


def parking_engine(engine: AsyncEngine, machine_name: str, gate: Gate) -> SagaEngine:
    """A saga engine of the test's own machine, running the parking definition."""
    handlers = {"ReserveFunctionArn": gate.reserve, "ConfirmFunctionArn": gate.confirm}
    options = EngineOptions(
        owner=f"engine-{uuid.uuid4().hex[:6]}",
        state_machine_name=machine_name,
        lease_seconds=10,
        poll_interval_seconds=0.05,
    )
    invoker = InProcessTaskInvoker(handlers, ThreadPoolExecutor(2))
    return SagaEngine.on(engine, StateMachine.from_definition(PARKING_DEFINITION), invoker, options)


async def parked_execution(engine: AsyncEngine, machine_name: str, gate: Gate) -> str:
    """A new execution of `machine_name`, run until it parked in Parked (FAILED)."""
    name = str(uuid.uuid4())
    starter = LocalSagaStarter(engine, state_machine=machine_name)
    await starter.start_execution(name=name, payload={"order_id": name})
    await parking_engine(engine, machine_name, gate).run_until_idle()
    described = await starter.describe(name)
    assert described is not None
    assert (described.status, described.error) == ("FAILED", "Parked")
    return name


async def test_a_parked_execution_is_redriven_at_the_failed_task_and_runs_to_its_end(
    engine: AsyncEngine, machine_name: str, database_url: str
) -> None:
    gate = Gate()
    name = await parked_execution(engine, machine_name, gate)
    assert len(gate.confirm_inputs) == 2  # the first call and its one retry

    settings = SagaEngineSettings(database_url=database_url)
    assert await redrive_command(name, settings) == 0
    async with engine.connect() as connection:
        row = (
            await connection.execute(sa.select(executions).where(executions.c.name == name))
        ).one()
    assert (row.status, row.current_state, row.error, row.stopped_at) == (
        "RUNNING",
        "Confirm",
        None,
        None,
    )
    assert row.state_input == {"order_id": name, "reserved": {"units": 2}}
    assert row.state_memo == {"retries": [], "wait_until": None}
    assert row.lease_owner is None

    gate.open = True
    await parking_engine(engine, machine_name, gate).run_until_idle()
    starter = LocalSagaStarter(engine, state_machine=machine_name)
    described = await starter.describe(name)
    assert described is not None
    assert described.status == "SUCCEEDED"
    assert described.output["confirmed"] == {"ok": True}
    assert gate.confirm_inputs[-1] == {"order_id": name, "reserved": {"units": 2}}
    types = [event.type for event in await starter.history(name)]
    redriven_at = types.index("ExecutionRedriven")
    assert "ExecutionFailed" in types[:redriven_at]
    assert types[redriven_at + 1 :][-1] == "ExecutionSucceeded"
    # Once it succeeded it is not parked any more.
    assert await redrive_command(name, settings) == 2


async def test_running_and_unknown_executions_are_refused(
    engine: AsyncEngine, machine_name: str, database_url: str
) -> None:
    name = str(uuid.uuid4())
    await LocalSagaStarter(engine, state_machine=machine_name).start_execution(
        name=name, payload={"order_id": name}
    )
    with pytest.raises(NotRedrivable):
        await redrive_execution(engine, name, actor="test")
    settings = SagaEngineSettings(database_url=database_url)
    assert await redrive_command(str(uuid.uuid4()), settings) == 1


async def test_of_concurrent_redrives_of_one_execution_exactly_one_wins(
    engine: AsyncEngine, machine_name: str
) -> None:
    name = await parked_execution(engine, machine_name, Gate())
    outcomes = await asyncio.gather(
        *(redrive_execution(engine, name, actor=f"operator-{i}") for i in range(8)),
        return_exceptions=True,
    )
    won = [outcome for outcome in outcomes if isinstance(outcome, Redriven)]
    assert len(won) == 1
    assert all(isinstance(o, NotRedrivable) for o in outcomes if not isinstance(o, Redriven))
    history = await LocalSagaStarter(engine, state_machine=machine_name).history(name)
    assert [event.type for event in history].count("ExecutionRedriven") == 1
