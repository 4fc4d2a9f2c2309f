"""The saga engine process's settings (SAGA_* and the shared service settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from marketplace_platform.settings import ServiceSettings


class SagaEngineSettings(ServiceSettings):
    """Which definition to run, with which handlers, and how to share executions."""

    service_name: str = "saga-engine"
    saga_definition: Path = Path("deploy/ecs/checkout_saga.asl.json")
    saga_handlers: str = "saga_tasks.registry:ASYNC_HANDLERS"
    saga_state_machine_name: str = "checkout"
    saga_lease_seconds: float = Field(default=30.0, gt=0)
    saga_poll_interval_seconds: float = Field(default=1.0, gt=0)
    # LISTEN for started executions (off: the poll alone finds them, e.g. behind a pooler in
    # transaction mode, where LISTEN cannot work).
    saga_wake_on_notify: bool = True
    # Executions held at once: each is a coroutine (its Tasks awaited), not a thread.
    saga_max_concurrent_executions: int = Field(default=64, ge=1)
    # Threads for blocking (Lambda-style) handlers only; the saga tasks are awaited.
    saga_task_threads: int = Field(default=16, ge=1)
