"""Create the declared queues on SQS: each DLQ, then its queue with the redrive policy.

The deployment does the same from deploy/ecs/event_rules.json; tests use this on moto.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from marketplace_platform.queues import QueueDefinition


def create_sqs_queues(
    client: Any, definitions: Sequence[QueueDefinition], *, name_prefix: str = ""
) -> dict[str, str]:
    """Create (or find) every queue and DLQ; returns queue name -> queue ARN."""
    arns: dict[str, str] = {}
    for definition in definitions:
        dlq_url = client.create_queue(QueueName=name_prefix + definition.dead_letter_queue)[
            "QueueUrl"
        ]
        arns[definition.dead_letter_queue] = _arn(client, dlq_url)
        redrive = {
            "deadLetterTargetArn": arns[definition.dead_letter_queue],
            "maxReceiveCount": str(definition.max_receive_count),
        }
        url = client.create_queue(
            QueueName=name_prefix + definition.name,
            Attributes={
                "VisibilityTimeout": str(definition.visibility_timeout_seconds),
                "RedrivePolicy": json.dumps(redrive),
            },
        )["QueueUrl"]
        arns[definition.name] = _arn(client, url)
    return arns


def _arn(client: Any, url: str) -> str:
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])
