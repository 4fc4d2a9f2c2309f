"""Task Resources run in process: an async handler (a step's core) is awaited on the engine's own
loop, a blocking Lambda-style handler runs on a bounded thread pool."""

from __future__ import annotations

import asyncio
import contextvars
import importlib
import inspect
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from workers.saga_engine.asl.errors import RUNTIME, TIMEOUT, StatesError

TaskHandler = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class LambdaContext:
    """The parts of the Lambda context object handlers commonly read."""

    function_name: str
    deadline_monotonic: float | None
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the task times out (a large number when it never does)."""
        if self.deadline_monotonic is None:
            return 900_000
        return max(0, int((self.deadline_monotonic - time.monotonic()) * 1000))


def placeholder_name(resource: str) -> str:
    """`${ReserveInventoryFunctionArn}` -> `ReserveInventoryFunctionArn`; other names unchanged."""
    if resource.startswith("${") and resource.endswith("}"):
        return resource[2:-1]
    return resource


def load_task_handlers(dotted: str) -> Mapping[str, TaskHandler]:
    """Import `package.module:NAME`, a mapping of placeholder name -> handler."""
    module_name, _, attribute = dotted.partition(":")
    if not attribute:
        raise ValueError(f"expected module:ATTRIBUTE, got {dotted!r}")
    handlers = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(handlers, Mapping):
        raise TypeError(f"{dotted} is not a mapping of handlers")
    return handlers


class InProcessTaskInvoker:
    """Runs a Task's handler: awaited on this loop if it is a coroutine function, else in a
    worker thread. Its exception becomes the Step Functions error (Error = class name, Cause =
    message) and running past TimeoutSeconds is States.Timeout."""

    def __init__(self, handlers: Mapping[str, TaskHandler], executor: ThreadPoolExecutor) -> None:
        self._handlers = dict(handlers)
        self._executor = executor

    def missing(self, resources: set[str]) -> set[str]:
        """The resources no handler is registered for."""
        return {r for r in resources if placeholder_name(r) not in self._handlers}

    async def invoke(self, resource: str, payload: Any, *, timeout_seconds: float | None) -> Any:
        """Run the handler of `resource` with `payload`; its JSON result is the task's result."""
        name = placeholder_name(resource)
        handler = self._handlers.get(name)
        if handler is None:
            raise StatesError(RUNTIME, f"no handler for resource {resource}")
        deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
        context = LambdaContext(function_name=name, deadline_monotonic=deadline)
        # The handler gets its own copy, as a Lambda gets its own deserialized event.
        event = json.loads(json.dumps(payload))
        call: Awaitable[Any]
        if inspect.iscoroutinefunction(handler):
            call = handler(event, context)  # cancelled, call and all, if it runs out of time
        else:
            # In a copy of this context, so the handler's calls join the state's span.
            call = asyncio.get_running_loop().run_in_executor(
                self._executor, contextvars.copy_context().run, handler, event, context
            )
        try:
            result = await asyncio.wait_for(call, timeout_seconds)
        except TimeoutError as exc:
            # A thread cannot be stopped; it finishes on its own and its result is dropped,
            # as a timed-out Lambda's would be.
            raise StatesError(TIMEOUT, f"{name} ran past {timeout_seconds}s") from exc
        except Exception as exc:
            raise StatesError(type(exc).__name__, str(exc)) from exc
        try:
            return json.loads(json.dumps(result))
        except (TypeError, ValueError) as exc:
            raise StatesError(RUNTIME, f"{name} returned a non-JSON value: {exc}") from exc
