"""The AWS adapter of the saga port: Step Functions' StartExecution and DescribeExecution."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from marketplace_platform.saga import ExecutionDescription, SagaStarter, StartedExecution


def execution_arn(state_machine_arn: str, name: str) -> str:
    """The ARN Step Functions gives execution `name` of a state machine (Standard workflow)."""
    prefix, marker, machine = state_machine_arn.rpartition(":stateMachine:")
    if not marker:
        raise ValueError(f"not a state machine ARN: {state_machine_arn}")
    return f"{prefix}:execution:{machine}:{name}"


class StepFunctionsSagaStarter(SagaStarter):
    """Starts executions of one Step Functions state machine through a boto3 client."""

    def __init__(self, client: Any, state_machine_arn: str) -> None:
        self._client = client
        self._state_machine_arn = state_machine_arn

    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        """StartExecution named `name`; ExecutionAlreadyExists is that execution, already there."""
        # StartExecution alone, no DescribeExecution first: this is on PlaceOrder's path, and
        # DescribeExecution is throttled far lower than StartExecution.
        try:
            response = await asyncio.to_thread(
                self._client.start_execution,
                stateMachineArn=self._state_machine_arn,
                name=name,
                # Sorted keys: a repeated start sends the very same input, which Step Functions
                # answers with the running execution instead of ExecutionAlreadyExists.
                input=json.dumps(dict(payload), sort_keys=True),
            )
        except self._client.exceptions.ExecutionAlreadyExists:
            # Another input, or a closed execution, under the name: the name is the order id,
            # so it is this order's saga, started before.
            arn = execution_arn(self._state_machine_arn, name)
            return StartedExecution(arn, name, already_existed=True)
        return StartedExecution(response["executionArn"], name, already_existed=False)

    async def describe(self, name: str) -> ExecutionDescription | None:
        """Status, output or error of the execution called `name` (None if there is none)."""
        arn = execution_arn(self._state_machine_arn, name)
        try:
            raw = await asyncio.to_thread(self._client.describe_execution, executionArn=arn)
        except self._client.exceptions.ExecutionDoesNotExist:
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


def stepfunctions_starter(
    state_machine_arn: str, *, region: str | None = None, endpoint_url: str | None = None
) -> StepFunctionsSagaStarter:
    """A starter with its own boto3 client (call from bootstrap, never at import time).

    The region defaults to the state machine's own (its ARN's), the only one that can start
    it; the endpoint to boto3's resolution (AWS_ENDPOINT_URL).
    """
    import boto3  # type: ignore[import-untyped]

    region = region or _arn_region(state_machine_arn)
    client = boto3.client("stepfunctions", region_name=region, endpoint_url=endpoint_url)
    return StepFunctionsSagaStarter(client, state_machine_arn)


def _arn_region(arn: str) -> str:
    # arn:partition:states:region:account:stateMachine:name
    parts = arn.split(":")
    if len(parts) < 7 or parts[2] != "states" or not parts[3]:
        raise ValueError(f"not a state machine ARN: {arn}")
    return parts[3]
