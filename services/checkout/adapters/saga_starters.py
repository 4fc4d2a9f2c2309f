"""Saga starters checkout can be configured with, besides the saga engine's own local one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Protocol

from marketplace_platform.errors import DependencyUnavailable
from marketplace_platform.saga import SagaStarter, StartedExecution


class UnavailableSagaStarter(SagaStarter):
    """Stands in while no saga engine is installed: orders stay PENDING, the completer retries."""

    def __init__(self, why: str) -> None:
        self.why = why

    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        """Refuse: there is nothing to start the execution on."""
        raise DependencyUnavailable(f"cannot start saga {name}: {self.why}")


class StepFunctionsClient(Protocol):
    """The slice of boto3's Step Functions client the starter uses."""

    def start_execution(self, **kwargs: Any) -> dict[str, Any]:
        """StartExecution."""


class StepFunctionsSagaStarter(SagaStarter):
    """Starts Standard workflow executions; a name that exists returns its execution."""

    def __init__(self, client: StepFunctionsClient, state_machine_arn: str) -> None:
        self.client = client
        self.state_machine_arn = state_machine_arn

    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        """StartExecution named `name`; ExecutionAlreadyExists means it is already running."""
        try:
            started = await asyncio.to_thread(
                self.client.start_execution,
                stateMachineArn=self.state_machine_arn,
                name=name,
                input=json.dumps(payload, sort_keys=True),
            )
        except Exception as error:
            # Standard workflows refuse a reused name whose input or state differs; for us the
            # name is the order id, so it is the same order's saga.
            if type(error).__name__ != "ExecutionAlreadyExists":
                raise
            arn = self.state_machine_arn.replace(":stateMachine:", ":execution:")
            return StartedExecution(f"{arn}:{name}", name, already_existed=True)
        return StartedExecution(started["executionArn"], name, already_existed=False)
