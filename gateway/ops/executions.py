"""Saga executions for the console: the execution, the definition it runs on as a graph of
states, the path it took through them (read from its history), and whether it can be redriven.

Only the top-level states are drawn; a Parallel's branch states ("CheckOrder/0/...") count
toward their Parallel. A redrive puts the execution back at the state that failed, so that
state appears again on the path from the `ExecutionRedriven` event on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from gateway.ops.database import iso
from marketplace_platform.saga.local import HistoryEvent, history_event
from marketplace_platform.saga.redrive import REDRIVEN, redrive_point
from marketplace_platform.saga.states import state_targets
from marketplace_platform.saga.tables import definitions, executions, history

_BRANCH_MARK = "/"


@dataclass(frozen=True)
class ExecutionView:
    """An execution row with its history, read in one transaction."""

    row: Row[Any]
    events: tuple[HistoryEvent, ...]

    def path(self) -> list[dict[str, Any]]:
        """The top-level states in the order the execution visited them."""
        return visited_path(self.events)

    def current_state(self) -> str | None:
        """The state it is in (running), or ended in; the row's own before any history."""
        path = self.path()
        state: str | None = path[-1]["state"] if path else self.row.current_state
        return state

    def redrivable(self) -> bool:
        """Whether a redrive would take it (marketplace_platform.saga.redrive)."""
        return redrive_point(self.row.status, self.events) is not None

    def summary(self) -> dict[str, Any]:
        """The execution's fields of the contract."""
        return {
            "name": self.row.name,
            "status": self.row.status,
            "current_state": self.current_state(),
            "started_at": iso(self.row.started_at),
            "stopped_at": iso(self.row.stopped_at),
            "error": self.row.error,
            "cause": self.row.cause,
        }


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id of a W3C traceparent ("00-<trace id>-<span id>-<flags>"), or None."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) < 3 or len(parts[1]) != 32:
        return None
    return parts[1].lower()


async def load_execution(connection: AsyncConnection, name: str) -> ExecutionView | None:
    """The execution called `name` with its history, or None."""
    row = (
        await connection.execute(sa.select(executions).where(executions.c.name == name))
    ).one_or_none()
    if row is None:
        return None
    rows = await connection.execute(
        sa.select(history).where(history.c.execution_id == row.id).order_by(history.c.seq)
    )
    events = tuple(history_event(r) for r in rows)
    return ExecutionView(row, events)


def _top_level(state: str | None) -> bool:
    return state is not None and _BRANCH_MARK not in state


def visited_path(events: Sequence[HistoryEvent]) -> list[dict[str, Any]]:
    """Each visit of a top-level state: when it was entered and left, the attempts its Task
    took (1 + the retries) and the error it failed with, if it did."""
    path: list[dict[str, Any]] = []
    for event in events:
        if not _top_level(event.state):
            continue
        entered = event.type.endswith("StateEntered") or event.type == REDRIVEN
        if entered:
            path.append(
                {
                    "state": event.state,
                    "entered_at": iso(event.at),
                    "exited_at": None,
                    "attempts": 1,
                    "error": None,
                }
            )
            continue
        visit = path[-1] if path and path[-1]["state"] == event.state else None
        if visit is None:
            continue
        if event.type.endswith("StateExited"):
            visit["exited_at"] = iso(event.at)
        elif event.type == "RetryScheduled":
            visit["attempts"] += 1
        elif event.type.endswith("Failed") and isinstance(event.payload, dict):
            visit["error"] = event.payload.get("error")
    return path


def graph(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A definition's top-level states as a graph: each with its type, the states it can go
    to (Next, the Choices' and Default's targets, the Catch targets) and whether it ends."""
    states = []
    for name, state in definition["States"].items():
        targets = state_targets(state)
        reachable = list(dict.fromkeys(t for t in targets if isinstance(t, str)))
        kind = state.get("Type")
        states.append(
            {
                "name": name,
                "type": kind,
                "next": reachable,
                "end": bool(state.get("End")) or kind in ("Succeed", "Fail"),
            }
        )
    return {"start_at": definition["StartAt"], "states": states}


async def pinned_definition(
    connection: AsyncConnection, digest: str | None, fallback: Mapping[str, Any]
) -> Mapping[str, Any]:
    """The definition the execution was pinned to, else `fallback` (the deployed file's)."""
    if digest is not None:
        stored = await connection.scalar(
            sa.select(definitions.c.definition).where(definitions.c.digest == digest)
        )
        if stored is not None:
            document: dict[str, Any] = json.loads(stored)
            return document
    return fallback


async def execution_detail(
    connection: AsyncConnection, name: str, *, fallback_definition: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The execution panel's document for `name`, or None if there is no such execution."""
    view = await load_execution(connection, name)
    if view is None:
        return None
    definition = await pinned_definition(
        connection, view.row.definition_digest, fallback_definition
    )
    return {
        "execution": view.summary(),
        "definition": graph(definition),
        "path": view.path(),
        "current_state": view.current_state(),
        "redrivable": view.redrivable(),
    }
