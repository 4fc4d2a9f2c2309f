"""Queues for the console: every queue and DLQ with its depth, a queue's dead letters (peeked:
nothing is received or deleted) and their redrive, through the queue port."""

from __future__ import annotations

from typing import Any

from gateway.ops.database import iso
from marketplace_platform.queues import Queues
from marketplace_platform.queues.operators import definition_of, describe, every_queue

ORDER_AGGREGATE = "order"


async def queue_list(queues: Queues) -> list[dict[str, Any]]:
    """Each declared queue, then its DLQ: depth and the oldest message's age."""
    return [
        {
            "name": depth.stats.name,
            "dlq": depth.dlq,
            "source": depth.source,
            "visible": depth.stats.visible,
            "in_flight": depth.stats.in_flight,
            "oldest_age_seconds": depth.stats.oldest_age_seconds,
        }
        for depth in await every_queue(queues)
    ]


async def dead_letters(queues: Queues, queue: str, *, limit: int) -> dict[str, Any]:
    """The oldest dead letters of `queue` (a source queue, or its DLQ by name); UnknownQueue
    if neither."""
    definition = definition_of(queues, queue)
    messages = []
    for message in await queues.peek(definition.dead_letter_queue, max_messages=limit):
        dead = describe(message)
        messages.append(
            {
                "message_id": dead.message_id,
                "receive_count": dead.receive_count,
                "sent_at": iso(dead.sent_at),
                "event_type": dead.event_type,
                "order_id": dead.aggregate_id if dead.aggregate_type == ORDER_AGGREGATE else None,
                "body": dead.body,
            }
        )
    return {"queue": definition.name, "dlq": definition.dead_letter_queue, "messages": messages}


async def redrive(queues: Queues, queue: str, *, max_messages: int | None) -> dict[str, Any]:
    """Move `queue`'s dead letters back to it (at most `max_messages`)."""
    definition = definition_of(queues, queue)
    moved = await queues.redrive(definition.name, max_messages=max_messages)
    return {"queue": definition.name, "redriven": moved}
