"""One contract for both adapters of the saga port: the local engine's tables and Step
Functions (moto in server mode) start by name idempotently and describe what they started.
The Step Functions starter is the one checkout's bootstrap builds for SAGA_BACKEND=stepfunctions."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.saga import SagaStarter
from marketplace_platform.saga.local import LocalSagaStarter
from marketplace_platform.saga.step_functions import StepFunctionsSagaStarter, execution_arn
from services.checkout.bootstrap import CheckoutSettings, saga_starter

PASS_THROUGH = {"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}


@pytest.fixture(params=["local", "stepfunctions"])
async def starter(
    request: pytest.FixtureRequest, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> Any:
    if request.param == "local":
        return LocalSagaStarter(engine, state_machine=f"contract-{uuid.uuid4().hex[:8]}")
    endpoint = request.getfixturevalue("moto_endpoint")
    # Region and endpoint as the checkout task gets them: from the environment.
    request.getfixturevalue("aws_credentials")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("stepfunctions")
    machine = await asyncio.to_thread(
        client.create_state_machine,
        name=f"checkout-{uuid.uuid4().hex[:8]}",
        definition=json.dumps(PASS_THROUGH),
        roleArn="arn:aws:iam::123456789012:role/saga",
    )
    settings = CheckoutSettings(
        saga_backend="stepfunctions", saga_state_machine_arn=machine["stateMachineArn"]
    )
    return saga_starter(settings, engine)


async def test_a_new_name_starts_an_execution(starter: SagaStarter) -> None:
    name = str(uuid.uuid4())
    started = await starter.start_execution(name=name, payload={"order_id": name})
    assert started.name == name
    assert not started.already_existed
    assert started.execution_id


async def test_the_same_name_returns_the_existing_execution(starter: SagaStarter) -> None:
    name = str(uuid.uuid4())
    payload = {"order_id": name, "subtotal": {"amount_minor": 1000, "currency": "USD"}}
    first = await starter.start_execution(name=name, payload=payload)
    again = await starter.start_execution(name=name, payload=dict(reversed(payload.items())))
    changed = await starter.start_execution(name=name, payload={**payload, "other": 1})
    assert again.execution_id == first.execution_id == changed.execution_id
    assert not first.already_existed
    # Another input under the name: ExecutionAlreadyExists on Step Functions.
    assert changed.already_existed
    # The same input (in any key order) while it runs: Step Functions answers as it answered
    # the first start, so only the local engine can tell it is a repeat.
    assert again.already_existed is isinstance(starter, LocalSagaStarter)


async def test_a_closed_execution_of_that_name_is_returned_not_started_again(
    starter: SagaStarter, engine: AsyncEngine
) -> None:
    name = str(uuid.uuid4())
    first = await starter.start_execution(name=name, payload={"order_id": name})
    await _close(starter, engine, first.execution_id, name)
    again = await starter.start_execution(name=name, payload={"order_id": name})
    assert again.execution_id == first.execution_id
    assert again.already_existed


async def test_describe_reports_the_input_and_unknown_names(starter: SagaStarter) -> None:
    assert isinstance(starter, LocalSagaStarter | StepFunctionsSagaStarter)
    name = str(uuid.uuid4())
    payload = {"order_id": name, "lines": [{"sku": "MUG-1", "quantity": 2}]}
    await starter.start_execution(name=name, payload=payload)
    description = await starter.describe(name)
    assert description is not None
    assert description.name == name
    assert description.input == payload
    assert description.status in {"RUNNING", "SUCCEEDED"}
    assert await starter.describe(str(uuid.uuid4())) is None


async def test_checkout_starts_sagas_on_the_shared_step_functions_starter(
    engine: AsyncEngine,
) -> None:
    arn = "arn:aws:states:eu-west-1:123456789012:stateMachine:checkout"
    settings = CheckoutSettings(saga_backend="stepfunctions", saga_state_machine_arn=arn)
    assert type(saga_starter(settings, engine)) is StepFunctionsSagaStarter


async def _close(starter: SagaStarter, engine: AsyncEngine, execution_id: str, name: str) -> None:
    """End the execution as its saga would (or as an operator's StopExecution does)."""
    if isinstance(starter, LocalSagaStarter):
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE saga.executions SET status = 'SUCCEEDED' WHERE name = :name"),
                {"name": name},
            )
        return
    import boto3

    client = boto3.client("stepfunctions")  # the fixture's environment points it at moto
    await asyncio.to_thread(client.stop_execution, executionArn=execution_id)


def test_execution_arn_follows_the_state_machine_arn() -> None:
    machine = "arn:aws:states:eu-west-1:123456789012:stateMachine:checkout"
    assert execution_arn(machine, "o-1") == (
        "arn:aws:states:eu-west-1:123456789012:execution:checkout:o-1"
    )
