"""The local adapter of the saga port: executions are rows in the saga engine's tables."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.saga import ExecutionDescription, SagaStarter, StartedExecution
from workers.saga_engine.store import ExecutionStore, HistoryEvent


class LocalSagaStarter(SagaStarter):
    """Starts executions for the local saga engine; a name already used returns its execution.

    Race-safe: the unique constraint on the name decides between concurrent starts.
    """

    def __init__(self, engine: AsyncEngine, *, state_machine: str = "checkout") -> None:
        self._store = ExecutionStore(engine)
        self._state_machine = state_machine

    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        """Start `name` with `payload` as its input, or return the execution of that name."""
        execution_id, existed = await self._store.start(
            name=name, payload=payload, state_machine=self._state_machine
        )
        return StartedExecution(execution_id=str(execution_id), name=name, already_existed=existed)

    async def describe(self, name: str) -> ExecutionDescription | None:
        """Status, output or error of the execution called `name` (None if there is none)."""
        return await self._store.describe(name)

    async def history(self, name: str) -> list[HistoryEvent]:
        """The execution's history events, oldest first."""
        return await self._store.history(name)
