"""The saga port: start a checkout saga execution by name.

Step Functions Standard semantics: starting an execution under a name that already exists
returns that execution instead of starting a second one. Adapters: `local` (executions are rows
the local saga engine runs) and `step_functions` (StartExecution on AWS).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StartedExecution:
    """An execution as StartExecution reports it.

    `already_existed` is True when the start found an execution of that name. Step Functions
    answers a repeat with the same input of a still running execution exactly as it answered
    the first start, so there False does not prove that a new execution began.
    """

    execution_id: str
    name: str
    already_existed: bool


@dataclass(frozen=True)
class ExecutionDescription:
    """What DescribeExecution tells about one execution."""

    execution_id: str
    name: str
    status: str
    input: Any
    output: Any
    error: str | None
    cause: str | None
    current_state: str | None
    started_at: datetime
    stopped_at: datetime | None


class SagaStarter(abc.ABC):
    """Starts executions of one state machine, idempotently by execution name."""

    @abc.abstractmethod
    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        """Start `name` with `payload` as its input, or return the execution of that name."""
