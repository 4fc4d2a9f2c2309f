"""The durable store of executions: start by name, claim with a lease, commit each step
fenced by the lease token, keep the definition each execution runs on, and read status and
history back."""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from marketplace_platform.saga.tables import SCHEMA, definitions, executions, history
from workers.saga_engine.asl.interpreter import Event, Position
from workers.saga_engine.asl.machine import StateMachine


class LeaseLost(Exception):
    """Another runner holds the execution now; this runner's step result must be dropped."""


@dataclass(frozen=True)
class Claim:
    """An execution this runner holds the lease on, as it stood when claimed."""

    execution_id: uuid.UUID
    name: str
    token: uuid.UUID
    owner: str
    input: Any
    started_at: datetime
    deadline: datetime | None
    position: Position | None
    # The digest of the definition it was begun on; None until a runner begins it.
    definition_digest: str | None
    previous_owner: str | None
    database_now: datetime
    # The trace of the call that started it: each state's span joins it.
    traceparent: str | None = None


_CLAIM = sa.text(
    f"""
    WITH candidate AS (
        SELECT id, lease_owner AS previous_owner
        FROM {SCHEMA}.executions
        WHERE status = 'RUNNING'
          AND state_machine = :state_machine
          AND (next_run_at <= now() OR deadline <= now())
          AND (lease_expires_at IS NULL OR lease_expires_at <= now())
        ORDER BY next_run_at
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    UPDATE {SCHEMA}.executions AS e
    SET lease_owner = :owner,
        lease_token = :token,
        lease_expires_at = now() + make_interval(secs => :lease_seconds)
    FROM candidate
    WHERE e.id = candidate.id
    RETURNING e.id, e.name, e.input, e.started_at, e.deadline, e.current_state, e.state_input,
              e.state_memo, e.state_entered_at, e.definition_digest, candidate.previous_owner,
              e.traceparent, now() AS database_now
    """
)


class ExecutionStore:
    """Executions and their history in PostgreSQL."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        # Digests this store has seen committed to `definitions`; rows are never deleted.
        self._stored_digests: set[str] = set()

    async def claim(self, *, state_machine: str, owner: str, lease_seconds: float) -> Claim | None:
        """Lease one due, unleased (or lease-expired) open execution of `state_machine`."""
        token = uuid.uuid4()
        parameters = {
            "state_machine": state_machine,
            "owner": owner,
            "token": token,
            "lease_seconds": lease_seconds,
        }
        async with self._engine.begin() as connection:
            row = (await connection.execute(_CLAIM, parameters)).one_or_none()
        if row is None:
            return None
        position = None
        if row.current_state is not None:
            position = Position.restore(
                row.current_state, row.state_input, row.state_entered_at, row.state_memo
            )
        return Claim(
            execution_id=row.id,
            name=row.name,
            token=token,
            owner=owner,
            input=row.input,
            started_at=row.started_at,
            deadline=row.deadline,
            position=position,
            definition_digest=row.definition_digest,
            previous_owner=row.previous_owner,
            database_now=row.database_now,
            traceparent=row.traceparent,
        )

    async def renew(self, claim: Claim, *, lease_seconds: float) -> None:
        """Extend the lease; raise LeaseLost if another runner has taken the execution."""
        async with self._engine.begin() as connection:
            await self._fenced_update(connection, claim, [], lease_seconds=lease_seconds)

    async def append(self, claim: Claim, events: Sequence[Event]) -> None:
        """Append events to the history while keeping the execution where it is."""
        async with self._engine.begin() as connection:
            await self._fenced_update(connection, claim, events)

    async def begin(
        self,
        claim: Claim,
        position: Position,
        *,
        machine: StateMachine,
        deadline: datetime | None,
        events: Sequence[Event],
        run_at: datetime | None = None,
        release: bool = False,
    ) -> None:
        """Record the first position of an execution no runner had begun, pinned to `machine`
        (due at `run_at`, else now)."""
        storing = None if machine.digest in self._stored_digests else machine
        async with self._engine.begin() as connection:
            await self._fenced_update(
                connection,
                claim,
                events,
                storing=storing,
                definition_digest=machine.digest,
                deadline=deadline,
                **_step_values(position, run_at, release),
            )
        self._stored_digests.add(machine.digest)

    async def definition(self, digest: str) -> StateMachine | None:
        """The stored definition of that digest, or None if it was never stored."""
        async with self._engine.connect() as connection:
            text = await connection.scalar(
                sa.select(definitions.c.definition).where(definitions.c.digest == digest)
            )
        if text is None:
            return None
        return StateMachine.from_definition(json.loads(text))

    async def advance(
        self,
        claim: Claim,
        position: Position,
        *,
        events: Sequence[Event],
        run_at: datetime | None = None,
        release: bool = False,
    ) -> None:
        """Commit a step: the new position (due at `run_at`, else now) and its events."""
        async with self._engine.begin() as connection:
            await self._fenced_update(
                connection, claim, events, **_step_values(position, run_at, release)
            )

    async def finish(
        self,
        claim: Claim,
        *,
        status: str,
        events: Sequence[Event],
        output: Any = None,
        error: str | None = None,
        cause: str | None = None,
    ) -> None:
        """Close the execution with its final status and output or error."""
        async with self._engine.begin() as connection:
            await self._fenced_update(
                connection,
                claim,
                events,
                status=status,
                output=output,
                error=error,
                cause=cause,
                stopped_at=True,
                **_RELEASED,
            )

    async def release(self, claim: Claim, events: Sequence[Event] = ()) -> None:
        """Give the lease up, so any runner may take the execution at once."""
        async with self._engine.begin() as connection:
            await self._fenced_update(connection, claim, events, **_RELEASED)

    async def _fenced_update(
        self,
        connection: AsyncConnection,
        claim: Claim,
        events: Sequence[Event],
        *,
        storing: StateMachine | None = None,
        **values: Any,
    ) -> None:
        # The lease token fences every write: a runner whose lease was taken over finds no
        # row to update and drops its result instead of overwriting the new holder's. The
        # events are appended by the same statement (a CTE fed by the update's new last_seq),
        # so a step costs one round trip however many events it has. The statement of each
        # shape (the columns set, events or not, a definition to store or not) is built once.
        statement = _write(tuple(sorted(values)), bool(events), storing is not None)
        parameters: dict[str, Any] = {
            "execution_id": claim.execution_id,
            "token": claim.token,
            "appended": len(events),
            **{f"v_{name}": value for name, value in values.items()},
        }
        if events:
            parameters["owner"] = claim.owner
            parameters["events"] = [
                {"offset": offset, "type": e.type, "state": e.state, "payload": e.payload}
                for offset, e in enumerate(events, start=1)
            ]
        if storing is not None:
            parameters["digest"] = storing.digest
            parameters["definition"] = storing.canonical
        last_seq = await connection.scalar(statement, parameters)
        if last_seq is None:
            raise LeaseLost(f"{claim.name}: lease {claim.token} is no longer held")


_RELEASED: dict[str, Any] = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}
# JSON columns that may be cleared: None is SQL NULL, not the JSON value null.
_NULLABLE_JSON = JSONB(none_as_null=True)


def _set(name: str) -> Any:
    """What a write sets column `name` to, from its parameter `v_<name>`."""
    bound = f"v_{name}"
    if name == "stopped_at":
        return sa.func.now()
    if name == "next_run_at":  # a due time, or now
        return sa.func.coalesce(
            sa.bindparam(bound, type_=sa.DateTime(timezone=True)), sa.func.now()
        )
    if name == "lease_seconds":  # renewing: the lease runs that long from now
        return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, sa.bindparam(bound))
    column = executions.c[name]
    kind = _NULLABLE_JSON if isinstance(column.type, JSONB) else column.type
    return sa.bindparam(bound, type_=kind)


@functools.cache
def _write(columns: tuple[str, ...], appends: bool, stores: bool) -> sa.Select[Any]:
    """The fenced write that sets `columns`, appends events (`appends`) and stores a
    definition (`stores`), built once per shape (its compiled form is cached with it)."""
    values = {
        ("lease_expires_at" if name == "lease_seconds" else name): _set(name) for name in columns
    }
    moved = (
        executions.update()
        .where(
            executions.c.id == sa.bindparam("execution_id", type_=sa.Uuid),
            executions.c.lease_token == sa.bindparam("token", type_=sa.Uuid),
        )
        .values(
            last_seq=executions.c.last_seq + sa.bindparam("appended", type_=sa.Integer), **values
        )
        .returning(executions.c.last_seq)
        .cte("moved")
    )
    statement = sa.select(moved.c.last_seq)
    if appends:
        statement = statement.add_cte(_appended(moved))
    if stores:
        # Stored in the same statement as the pin: no pinned digest lacks its definition,
        # and beginning an execution costs no statement more.
        statement = statement.add_cte(_store_definition())
    return statement


def _appended(moved: sa.CTE) -> sa.CTE:
    """An INSERT of the `events` parameter into the history, numbered up to `moved`'s new
    last_seq."""
    rows = (
        sa.func.jsonb_to_recordset(sa.bindparam("events", type_=JSONB))
        .table_valued(
            sa.column("type", sa.Text),
            sa.column("state", sa.Text),
            sa.column("payload", JSONB),
            sa.column("offset", sa.Integer),
        )
        .render_derived(name="event", with_types=True)
    )
    numbered = sa.select(
        sa.bindparam("execution_id", type_=sa.Uuid),
        moved.c.last_seq - sa.bindparam("appended", type_=sa.Integer) + rows.c.offset,
        rows.c.type,
        rows.c.state,
        rows.c.payload,
        sa.bindparam("owner", type_=sa.Text),
    ).select_from(moved.join(rows, sa.true()))
    return (
        history.insert()
        .from_select(["execution_id", "seq", "type", "state", "payload", "owner"], numbered)
        .cte("appended")
    )


def _store_definition() -> sa.CTE:
    return (
        insert(definitions)
        .values(digest=sa.bindparam("digest"), definition=sa.bindparam("definition"))
        .on_conflict_do_nothing(index_elements=[definitions.c.digest])
        .cte("stored_definition")
    )


def _step_values(position: Position, run_at: datetime | None, release: bool) -> dict[str, Any]:
    values: dict[str, Any] = {
        "current_state": position.state,
        "state_input": position.input,
        "state_memo": position.memo(),
        "state_entered_at": position.entered_at,
        "next_run_at": run_at,  # None: now
    }
    if release:
        values.update(_RELEASED)
    return values
