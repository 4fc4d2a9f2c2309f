"""The local adapter of the saga port: an execution is a row the local saga engine runs.

The tables (and their migrations) are here, beside the port, so that checkout starts sagas
without importing the engine; the engine (workers.saga_engine) claims and advances the rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from opentelemetry import propagate
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.ids import new_id
from marketplace_platform.notifications import notify
from marketplace_platform.saga import ExecutionDescription, SagaStarter, StartedExecution
from marketplace_platform.saga.tables import executions, history

# Where a started execution is announced; the payload is its state machine's name.
EXECUTIONS_CHANNEL = "saga_executions"


@dataclass(frozen=True)
class HistoryEvent:
    """One row of an execution's history."""

    seq: int
    type: str
    state: str | None
    payload: Any
    owner: str | None
    at: datetime


def history_event(row: Any) -> HistoryEvent:
    """The HistoryEvent of a row of the history table (every column selected)."""
    return HistoryEvent(row.seq, row.type, row.state, row.payload, row.owner, row.at)


class LocalSagaStarter(SagaStarter):
    """Starts executions for the local saga engine; a name already used returns its execution.

    Race-safe: the unique constraint on the name decides between concurrent starts.
    """

    def __init__(self, engine: AsyncEngine, *, state_machine: str = "checkout") -> None:
        self._engine = engine
        self._state_machine = state_machine

    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        """Start `name` with `payload` as its input, or return the execution of that name."""
        execution_id, existed = await self._insert(name=name, payload=payload)
        return StartedExecution(execution_id=str(execution_id), name=name, already_existed=existed)

    async def _insert(self, *, name: str, payload: Mapping[str, Any]) -> tuple[uuid.UUID, bool]:
        """Insert a new execution, or find the one of that name: (id, already existed)."""
        async with self._engine.begin() as connection:
            inserted = await connection.scalar(
                insert(executions)
                .values(
                    id=new_id(),
                    name=name,
                    state_machine=self._state_machine,
                    status="RUNNING",
                    input=dict(payload),
                    traceparent=_current_traceparent(),
                    started_at=sa.func.now(),
                    next_run_at=sa.func.now(),
                    last_seq=1,
                )
                .on_conflict_do_nothing(index_elements=[executions.c.name])
                .returning(executions.c.id)
            )
            if inserted is not None:
                # The first history row, and the engines' wake-up (sent on commit) in the
                # same statement: an idle engine claims the execution at once, not at its poll.
                notified = notify(EXECUTIONS_CHANNEL, self._state_machine).cte("notified")
                first_event = sa.select(
                    sa.literal(inserted, sa.Uuid),
                    sa.literal(1),
                    sa.literal("ExecutionStarted"),
                    sa.literal({"input": dict(payload)}, JSONB),
                ).select_from(notified)
                await connection.execute(
                    history.insert().from_select(
                        ["execution_id", "seq", "type", "payload"], first_event
                    )
                )
                return inserted, False
            existing = await connection.scalar(
                sa.select(executions.c.id).where(executions.c.name == name)
            )
        if existing is None:  # pragma: no cover - rows are never deleted
            raise LookupError(name)
        return existing, True

    async def describe(self, name: str) -> ExecutionDescription | None:
        """The execution called `name`, or None."""
        async with self._engine.connect() as connection:
            row = (
                await connection.execute(sa.select(executions).where(executions.c.name == name))
            ).one_or_none()
        if row is None:
            return None
        return ExecutionDescription(
            execution_id=str(row.id),
            name=row.name,
            status=row.status,
            input=row.input,
            output=row.output,
            error=row.error,
            cause=row.cause,
            current_state=row.current_state,
            started_at=row.started_at,
            stopped_at=row.stopped_at,
        )

    async def history(self, name: str) -> list[HistoryEvent]:
        """The history of the execution called `name`, oldest first (empty if unknown)."""
        query = (
            sa.select(history)
            .join(executions, executions.c.id == history.c.execution_id)
            .where(executions.c.name == name)
            .order_by(history.c.seq)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [history_event(row) for row in rows]


def _current_traceparent() -> str | None:
    """The traceparent of the span this execution is started in (None when not traced), so
    the engine's state spans continue the trace of the PlaceOrder that started it."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")
