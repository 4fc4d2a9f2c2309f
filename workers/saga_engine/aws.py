"""The AWS adapter of the saga port: Step Functions StartExecution, idempotent by name."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from marketplace_platform.saga import SagaStarter, StartedExecution
from workers.saga_engine.store import ExecutionDescription


def execution_arn(state_machine_arn: str, name: str) -> str:
    """The ARN Step Functions gives execution `name` of a state machine (Standard workflow)."""
    prefix, marker, machine = state_machine_arn.rpartition(":stateMachine:")
    if not marker:
        raise ValueError(f"not a state machine ARN: {state_machine_arn}")
    return f"{prefix}:execution:{machine}:{name}"


class StepFunctionsSagaStarter(SagaStarter):
    """Starts executions of one Step Functions state machine through a boto3 client.

    Step Functions answers a repeated start (same name, same input, still running) with the
    running execution, and ExecutionAlreadyExists otherwise; both come back as that execution.
    """

    def __init__(self, client: Any, state_machine_arn: str) -> None:
        self._client = client
        self._state_machine_arn = state_machine_arn

    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        """Start `name` with `payload` as its input, or return the execution of that name."""
        existing = await self._describe_raw(name)
        if existing is not None:
            return StartedExecution(existing["executionArn"], name, already_existed=True)
        try:
            response = await asyncio.to_thread(
                self._client.start_execution,
                stateMachineArn=self._state_machine_arn,
                name=name,
                input=json.dumps(dict(payload)),
            )
        except self._client.exceptions.ExecutionAlreadyExists:
            arn = execution_arn(self._state_machine_arn, name)
            return StartedExecution(arn, name, already_existed=True)
        return StartedExecution(response["executionArn"], name, already_existed=False)

    async def describe(self, name: str) -> ExecutionDescription | None:
        """Status, output or error of the execution called `name` (None if there is none)."""
        raw = await self._describe_raw(name)
        if raw is None:
            return None
        output = raw.get("output")
        return ExecutionDescription(
            execution_id=raw["executionArn"],
            name=raw["name"],
            status=raw["status"],
            input=json.loads(raw.get("input") or "null"),
            output=None if output is None else json.loads(output),
            error=raw.get("error"),
            cause=raw.get("cause"),
            current_state=None,
            started_at=raw["startDate"],
            stopped_at=raw.get("stopDate"),
        )

    async def _describe_raw(self, name: str) -> dict[str, Any] | None:
        arn = execution_arn(self._state_machine_arn, name)
        try:
            described: dict[str, Any] = await asyncio.to_thread(
                self._client.describe_execution, executionArn=arn
            )
        except self._client.exceptions.ExecutionDoesNotExist:
            return None
        return described


def stepfunctions_starter(
    state_machine_arn: str, *, region: str, endpoint_url: str | None = None
) -> StepFunctionsSagaStarter:
    """A starter with its own boto3 client (call from bootstrap, never at import time)."""
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("stepfunctions", region_name=region, endpoint_url=endpoint_url)
    return StepFunctionsSagaStarter(client, state_machine_arn)
