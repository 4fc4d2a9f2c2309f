"""Redrive a parked execution of the local saga engine, as Step Functions' RedriveExecution
does: a FAILED execution is RUNNING again at the state that failed, with that state's input.

Parked means a state failed past its retries and the execution ended without moving on: the
failure was caught straight into a Fail state (ConfirmationParked, CompensationParked) or not
caught at all. A failure caught into another path (a Pass that records why the order is
cancelled, then compensations) ended as the definition meant it to: that outcome is not
redrivable, nor is an execution that never failed a state, or one that is not FAILED.

The redrive is one transaction on the execution's row, locked: status RUNNING, the failed
state's position with fresh retry counts, due now, no lease, the overall deadline (if the
definition has one) counted again from now, and an `ExecutionRedriven` history event; the
engines are woken as by a start. Here, beside the tables and the local starter, so that both
the saga engine's CLI and the operator console (which may import no worker) use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from marketplace_platform.notifications import notify
from marketplace_platform.saga.local import EXECUTIONS_CHANNEL, HistoryEvent, history_event
from marketplace_platform.saga.tables import executions, history

REDRIVEN = "ExecutionRedriven"
_BRANCH_MARK = "/"  # a Parallel branch's states are named "<Parallel>/<index>/<state>"


class ExecutionNotFound(LookupError):
    """No execution has that name."""


class NotRedrivable(Exception):
    """The execution is not parked: it runs, succeeded, timed out or ended as designed."""


@dataclass(frozen=True)
class RedrivePoint:
    """Where a redrive puts the execution: the state that failed, with the input it had."""

    state: str
    input: Any


@dataclass(frozen=True)
class Redriven:
    """The execution as the redrive left it."""

    name: str
    status: str
    state: str
    redrive_count: int


def _top_level(state: str | None) -> bool:
    return state is not None and _BRANCH_MARK not in state


def redrive_point(status: str, events: Sequence[HistoryEvent]) -> RedrivePoint | None:
    """Where a redrive of an execution with this status and history would resume; None when
    it is not parked (the module's docstring)."""
    if status != "FAILED":
        return None
    failed = next(
        (
            index
            for index in range(len(events) - 1, -1, -1)
            if events[index].type.endswith("Failed")
            and events[index].type != "ExecutionFailed"
            and _top_level(events[index].state)
        ),
        None,
    )
    if failed is None:
        return None
    state = events[failed].state
    assert state is not None
    for later in events[failed + 1 :]:
        if later.type.endswith("StateEntered") and _top_level(later.state):
            if later.type != "FailStateEntered":
                return None  # caught into a path of its own: an outcome, not a parking
            break
    entered = next(
        (
            event
            for event in reversed(events[:failed])
            if event.state == state and event.type.endswith("StateEntered")
        ),
        None,
    )
    if entered is None or not isinstance(entered.payload, dict) or "input" not in entered.payload:
        return None
    return RedrivePoint(state, entered.payload["input"])


async def read_history(connection: AsyncConnection, execution_id: Any) -> list[HistoryEvent]:
    """An execution's history, oldest first."""
    rows = await connection.execute(
        sa.select(history).where(history.c.execution_id == execution_id).order_by(history.c.seq)
    )
    return [history_event(row) for row in rows]


async def redrive_execution(engine: AsyncEngine, name: str, *, actor: str) -> Redriven:
    """Redrive the parked execution `name` (recording `actor` in its history); raise
    ExecutionNotFound or NotRedrivable."""
    async with engine.begin() as connection:
        row = (
            await connection.execute(
                sa.select(executions).where(executions.c.name == name).with_for_update()
            )
        ).one_or_none()
        if row is None:
            raise ExecutionNotFound(name)
        items = await read_history(connection, row.id)
        point = redrive_point(row.status, items)
        if point is None:
            raise NotRedrivable(f"execution {name} is {row.status}, not parked in a failed state")
        count = 1 + sum(item.type == REDRIVEN for item in items)
        seq = row.last_seq + 1
        remaining = executions.c.deadline - executions.c.started_at
        await connection.execute(
            executions.update()
            .where(executions.c.id == row.id)
            .values(
                status="RUNNING",
                current_state=point.state,
                state_input=point.input,
                state_memo={"retries": [], "wait_until": None},
                state_entered_at=sa.func.now(),
                output=sa.null(),
                error=None,
                cause=None,
                stopped_at=None,
                deadline=sa.case(
                    (executions.c.deadline.is_(None), None), else_=sa.func.now() + remaining
                ),
                next_run_at=sa.func.now(),
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
                last_seq=seq,
            )
        )
        await connection.execute(
            history.insert().values(
                execution_id=row.id,
                seq=seq,
                type=REDRIVEN,
                state=point.state,
                payload={
                    "redrive_count": count,
                    "error": row.error,
                    "cause": row.cause,
                    "actor": actor,
                },
                owner=actor,
            )
        )
        await connection.execute(notify(EXECUTIONS_CHANNEL, row.state_machine))
    return Redriven(name=name, status="RUNNING", state=point.state, redrive_count=count)
