"""The queue port: SQS semantics for consumers and operators.

A received message stays invisible for its visibility timeout; delete it after handling it,
or it comes back (at least once). Every receive counts; once a message has been received
`max_receive_count` times without being deleted, the next receive moves it to the queue's
dead-letter queue instead. `redrive` moves dead letters back to their source queue.

Message bodies are EventBridge events as JSON: decode them with
`marketplace_platform.event_bus.decode_message_body`. Queue definitions (name, DLQ, maximum
receives, visibility timeout) live in `deploy/ecs/event_rules.json`.

Adapters: `workers.queues.local.PostgresQueues` (local) and `workers.queues.sqs.SqsQueues` (AWS).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class QueueDefinition:
    """A queue, its dead-letter queue and its redrive policy."""

    name: str
    dead_letter_queue: str
    max_receive_count: int
    visibility_timeout_seconds: int


@dataclass(frozen=True)
class ReceivedMessage:
    """A message as a receive hands it out; the receipt handle names this receive."""

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: datetime


@dataclass(frozen=True)
class QueueStats:
    """A queue's depth for operators: visible, in flight, and the oldest message's age."""

    name: str
    visible: int
    in_flight: int
    oldest_age_seconds: float | None


class UnknownQueue(LookupError):
    """The named queue is not declared."""


class Queues(abc.ABC):
    """Send, receive, delete and redrive messages on the declared queues (by name)."""

    @abc.abstractmethod
    async def send(self, queue: str, body: str) -> str:
        """Put one message on `queue`; returns its message id."""

    @abc.abstractmethod
    async def send_batch(self, queue: str, bodies: Sequence[str]) -> list[str]:
        """Put several messages on `queue`; returns their message ids in order."""

    @abc.abstractmethod
    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        visibility_timeout_seconds: int | None = None,
        wait_seconds: float = 0,
    ) -> list[ReceivedMessage]:
        """Up to `max_messages` visible messages, hidden for the visibility timeout.

        Waits up to `wait_seconds` for a first message (long polling). A message already
        received `max_receive_count` times moves to the dead-letter queue instead.
        """

    @abc.abstractmethod
    async def delete(self, queue: str, receipt_handle: str) -> None:
        """Remove a received message for good (a handled message)."""

    @abc.abstractmethod
    async def change_visibility(
        self, queue: str, receipt_handle: str, visibility_timeout_seconds: int
    ) -> None:
        """Hide a received message for this long from now (0 makes it visible again)."""

    @abc.abstractmethod
    async def stats(self, queue: str) -> QueueStats:
        """Depth and oldest-message age of `queue`."""

    @abc.abstractmethod
    async def peek(self, queue: str, *, max_messages: int = 10) -> list[ReceivedMessage]:
        """Look at up to `max_messages` messages without taking them (for DLQ inspection).

        On SQS a peek is a receive made visible again at once, so it counts as a receive:
        peek at dead-letter queues (which have no redrive policy), not at live queues.
        """

    @abc.abstractmethod
    async def redrive(self, queue: str, *, max_messages: int | None = None) -> int:
        """Move messages from `queue`'s dead-letter queue back to it; returns how many."""

    @abc.abstractmethod
    def definitions(self) -> Sequence[QueueDefinition]:
        """The declared queues (not their DLQs)."""
