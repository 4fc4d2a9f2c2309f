"""Turn the routing file into EventBridge rules with SQS targets (what the deployment does).

Tests run it against moto; it also shows the deployment templates the exact translation.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

from marketplace_platform.event_bus.rules import Routing


def create_eventbridge_rules(
    client: Any, routing: Routing, queue_arns: Mapping[str, str]
) -> list[str]:
    """Create the bus (unless it is `default`), one rule per routing rule, targets by ARN."""
    if routing.event_bus_name != "default":
        with contextlib.suppress(client.exceptions.ResourceAlreadyExistsException):
            client.create_event_bus(Name=routing.event_bus_name)
    created: list[str] = []
    for rule in routing.rules:
        client.put_rule(
            Name=rule.name,
            EventBusName=routing.event_bus_name,
            EventPattern=json.dumps(rule.event_pattern),
            State="ENABLED",
        )
        client.put_targets(
            Rule=rule.name,
            EventBusName=routing.event_bus_name,
            Targets=[
                {"Id": f"queue-{position}", "Arn": queue_arns[target]}
                for position, target in enumerate(rule.targets)
            ],
        )
        created.append(rule.name)
    return created
