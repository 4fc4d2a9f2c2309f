"""The saga engine port: start a checkout saga execution by name.

Step Functions Standard semantics: starting an execution under a name that already exists
returns that execution instead of starting a second one. The local adapter is the saga
engine's own (workers.saga_engine), the AWS adapter calls Step Functions' StartExecution.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StartedExecution:
    """An execution as StartExecution reports it."""

    execution_id: str
    name: str
    already_existed: bool


class SagaStarter(abc.ABC):
    """Starts executions of one state machine, idempotently by execution name."""

    @abc.abstractmethod
    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        """Start `name` with `payload` as its input, or return the execution of that name."""
