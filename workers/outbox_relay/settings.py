"""The outbox relay process's settings (RELAY_*, AWS_* and the shared service settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from marketplace_platform.settings import ServiceSettings


class OutboxRelaySettings(ServiceSettings):
    """Where to read outboxes, which bus to publish to, and how fast to go."""

    service_name: str = "outbox-relay"
    # Comma-separated schemas to relay; empty means every schema that has an outbox table.
    relay_schemas: str = ""
    relay_batch_size: int = Field(default=200, ge=1)
    # A LISTEN on the outbox rows' NOTIFY wakes an idle relay; it looks anyway this often (a
    # NOTIFY is skipped while a relay is busy, lost while the LISTEN is down). False: the poll
    # alone (e.g. behind a pooler in transaction mode, where LISTEN cannot work).
    relay_wake_on_notify: bool = True
    relay_poll_interval_seconds: float = Field(default=1.0, gt=0)
    # After a pass that published rows, how long to let more gather before the next one.
    relay_batch_window_seconds: float = Field(default=0.05, ge=0)
    relay_lag_log_interval_seconds: float = Field(default=15.0, gt=0)
    relay_bus: Literal["local", "eventbridge"] = "local"
    relay_rules_file: Path = Path("deploy/ecs/event_rules.json")
    # Prefixes every queue and rule name: one namespace per environment (or test).
    relay_queue_prefix: str = ""
    # The EventBridge bus; empty means the rules file's event_bus_name.
    relay_event_bus_name: str = ""
    # The database-backed gauges (workers.outbox_relay.gauges): how often, within how long,
    # and how long a saga execution may sit in one state before it counts as stuck. Only
    # served while METRICS_PORT is set.
    relay_db_gauges: bool = True  # False in every replica but one
    relay_gauges_interval_seconds: float = Field(default=5.0, gt=0)
    relay_gauges_timeout_seconds: float = Field(default=2.0, gt=0)
    relay_stuck_after_seconds: float = Field(default=300.0, gt=0)
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None

    def schema_list(self) -> list[str] | None:
        """The configured schemas, or None to discover them."""
        names = [name.strip() for name in self.relay_schemas.split(",") if name.strip()]
        return names or None
