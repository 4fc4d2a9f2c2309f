"""Queue definitions read from the routing file (deploy/ecs/event_rules.json)."""

from __future__ import annotations

import json
from pathlib import Path

from marketplace_platform.queues import QueueDefinition

DEFAULT_RULES_FILE = Path("deploy/ecs/event_rules.json")


def load_queue_definitions(path: Path = DEFAULT_RULES_FILE) -> list[QueueDefinition]:
    """The queues declared in the routing file, with their DLQs and redrive policies."""
    document = json.loads(path.read_text())
    return [
        QueueDefinition(
            name=str(entry["name"]),
            dead_letter_queue=str(entry["dead_letter_queue"]),
            max_receive_count=int(entry["max_receive_count"]),
            visibility_timeout_seconds=int(entry["visibility_timeout_seconds"]),
        )
        for entry in document["queues"]
    ]
