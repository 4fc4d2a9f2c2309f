"""The queue tool's settings: which backend, which routing file, which namespace."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from marketplace_platform.settings import ServiceSettings


class QueueAdminSettings(ServiceSettings):
    """QUEUE_BACKEND local (PostgreSQL) or sqs, and where the queues are declared."""

    service_name: str = "queue-admin"
    queue_backend: Literal["local", "sqs"] = "local"
    relay_rules_file: Path = Path("deploy/ecs/event_rules.json")
    relay_queue_prefix: str = ""
    aws_region: str = "us-east-1"
    aws_endpoint_url: str | None = None
