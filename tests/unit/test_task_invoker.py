"""Lambda-style handlers behind Task Resources: placeholder names, errors as Step Functions
names them, TimeoutSeconds, JSON results."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from workers.saga_engine.asl.errors import StatesError
from workers.saga_engine.task_invoker import InProcessTaskInvoker, placeholder_name


class PaymentDeclined(Exception):
    pass


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=False)


def test_placeholders_name_their_handler() -> None:
    assert placeholder_name("${ReserveInventoryFunctionArn}") == "ReserveInventoryFunctionArn"
    assert placeholder_name("arn:aws:lambda:x") == "arn:aws:lambda:x"


async def test_the_handler_gets_the_payload_and_a_context(executor: ThreadPoolExecutor) -> None:
    seen: list[Any] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append((event, context.function_name, context.get_remaining_time_in_millis()))
        return {"ok": True}

    invoker = InProcessTaskInvoker({"ReserveFunctionArn": handler}, executor)
    result = await invoker.invoke("${ReserveFunctionArn}", {"a": 1}, timeout_seconds=5)
    assert result == {"ok": True}
    ((event, name, remaining),) = seen
    assert (event, name) == ({"a": 1}, "ReserveFunctionArn")
    assert 0 < remaining <= 5000


async def test_an_exception_becomes_its_class_name_and_message(
    executor: ThreadPoolExecutor,
) -> None:
    def handler(event: Any, context: Any) -> None:
        raise PaymentDeclined("card declined")

    invoker = InProcessTaskInvoker({"Pay": handler}, executor)
    with pytest.raises(StatesError) as failure:
        await invoker.invoke("${Pay}", {}, timeout_seconds=None)
    assert (failure.value.error, failure.value.cause) == ("PaymentDeclined", "card declined")


async def test_running_past_timeout_seconds_is_states_timeout(executor: ThreadPoolExecutor) -> None:
    release = threading.Event()
    invoker = InProcessTaskInvoker({"Slow": lambda event, context: release.wait(10)}, executor)
    try:
        with pytest.raises(StatesError) as failure:
            await invoker.invoke("${Slow}", {}, timeout_seconds=0.1)
    finally:
        release.set()
    assert failure.value.error == "States.Timeout"


async def test_unknown_resources_and_non_json_results_are_runtime_errors(
    executor: ThreadPoolExecutor,
) -> None:
    invoker = InProcessTaskInvoker({"Odd": lambda event, context: {1, 2}}, executor)
    assert invoker.missing({"${Odd}", "${Gone}"}) == {"${Gone}"}
    for resource in ("${Odd}", "${Gone}"):
        with pytest.raises(StatesError) as failure:
            await invoker.invoke(resource, {}, timeout_seconds=None)
        assert failure.value.error == "States.Runtime"
