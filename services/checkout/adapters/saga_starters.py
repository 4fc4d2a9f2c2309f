"""The saga starter checkout falls back to when no saga backend can be reached.

The real starters are the saga port's adapters: Step Functions in marketplace_platform.saga,
the local saga engine's in marketplace_platform.saga.local.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marketplace_platform.errors import DependencyUnavailable
from marketplace_platform.saga import SagaStarter, StartedExecution


class UnavailableSagaStarter(SagaStarter):
    """Stands in while no saga engine is installed: orders stay PENDING, the completer retries."""

    def __init__(self, why: str) -> None:
        self.why = why

    async def start_execution(self, *, name: str, payload: Mapping[str, Any]) -> StartedExecution:
        """Refuse: there is nothing to start the execution on."""
        raise DependencyUnavailable(f"cannot start saga {name}: {self.why}")
