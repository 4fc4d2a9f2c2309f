"""Queues as operators see them, shared by the queue tool (workers.queue_admin) and the operator
console (gateway.ops): every queue's and DLQ's depth, which DLQ backs a queue, and what a dead
letter is about."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from marketplace_platform.event_bus import decode_message_body
from marketplace_platform.queues import (
    QueueDefinition,
    Queues,
    QueueStats,
    ReceivedMessage,
    UnknownQueue,
)


@dataclass(frozen=True)
class QueueDepth:
    """One queue's depth, and the queue it is the DLQ of (None: it is a source queue)."""

    stats: QueueStats
    source: str | None

    @property
    def dlq(self) -> bool:
        """Whether it is a dead-letter queue."""
        return self.source is not None


async def every_queue(queues: Queues) -> list[QueueDepth]:
    """Each declared queue followed by its DLQ, with their depths."""
    depths = []
    for definition in queues.definitions():
        depths.append(QueueDepth(await queues.stats(definition.name), None))
        depths.append(QueueDepth(await queues.stats(definition.dead_letter_queue), definition.name))
    return depths


def definition_of(queues: Queues, queue: str) -> QueueDefinition:
    """The declared queue that `queue` names, as itself or as its dead-letter queue."""
    for definition in queues.definitions():
        if queue in (definition.name, definition.dead_letter_queue):
            return definition
    raise UnknownQueue(queue)


@dataclass(frozen=True)
class DeadLetter:
    """A peeked message and the event it carries, or why it could not be decoded."""

    message_id: str
    receive_count: int
    sent_at: datetime
    body: str
    event_id: str | None = None
    event_type: str | None = None
    producer: str | None = None
    aggregate_type: str | None = None
    aggregate_id: str | None = None
    undecodable: str | None = None


def describe(message: ReceivedMessage) -> DeadLetter:
    """What a dead letter is about: its event's id, type, producer and aggregate."""
    try:
        envelope = decode_message_body(message.body)
    except Exception as error:
        return DeadLetter(
            message.message_id,
            message.receive_count,
            message.sent_at,
            message.body,
            undecodable=f"{type(error).__name__}: {error}",
        )
    return DeadLetter(
        message.message_id,
        message.receive_count,
        message.sent_at,
        message.body,
        event_id=envelope.event_id,
        event_type=envelope.event_type,
        producer=envelope.producer,
        aggregate_type=envelope.aggregate_type,
        aggregate_id=envelope.aggregate_id,
    )
