"""The queue port: SQS semantics for consumers and operators.

A received message stays invisible for its visibility timeout; delete it after handling it,
or it comes back (at least once). Every receive counts; once a message has been received
`max_receive_count` times without being deleted, the next receive moves it to the queue's
dead-letter queue instead. `redrive` moves dead letters back to their source queue.

`retry_later` is the way around that budget for a message that failed only because something it
needs is unavailable: the message comes back after a delay with a fresh receive count and its
`retry_attempt` one higher, so a dependency down for longer than the receives last does not
send a message that would succeed to the DLQ.

Message bodies are EventBridge events as JSON: decode them with
`marketplace_platform.event_bus.decode_message_body`. Queue definitions (name, DLQ, maximum
receives, visibility timeout) live in `deploy/ecs/event_rules.json`.

Adapters: `postgres.PostgresQueues` (local) and `sqs.SqsQueues` (AWS), in this package.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

# SQS's longest message delay; both adapters accept `retry_later` delays up to it.
MAX_RETRY_DELAY_SECONDS = 900


@dataclass(frozen=True)
class QueueDefinition:
    """A queue, its dead-letter queue and its redrive policy."""

    name: str
    dead_letter_queue: str
    max_receive_count: int
    visibility_timeout_seconds: int


@dataclass(frozen=True)
class ReceivedMessage:
    """A message as a receive hands it out; the receipt handle names this receive.

    `retry_attempt` counts the `retry_later`s behind this message (0 as sent), so the caller's
    backoff keeps growing across them.
    """

    message_id: str
    receipt_handle: str
    body: str
    receive_count: int
    sent_at: datetime
    retry_attempt: int = 0


@dataclass(frozen=True)
class QueueStats:
    """A queue's depth for operators: visible, in flight, and the oldest message's age."""

    name: str
    visible: int
    in_flight: int
    oldest_age_seconds: float | None


class UnknownQueue(LookupError):
    """The named queue is not declared."""


def check_retry_delay(delay_seconds: int) -> int:
    """The delay itself, or ValueError when SQS would refuse it (negative or over 15 minutes)."""
    if not 0 <= delay_seconds <= MAX_RETRY_DELAY_SECONDS:
        raise ValueError(f"retry delay {delay_seconds}s is outside 0..{MAX_RETRY_DELAY_SECONDS}s")
    return delay_seconds


class Queues(abc.ABC):
    """Send, receive, delete, retry later and redrive messages on the declared queues."""

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

    async def delete_batch(self, queue: str, receipt_handles: Sequence[str]) -> None:
        """Remove several received messages for good (by default one `delete` each)."""
        for receipt_handle in receipt_handles:
            await self.delete(queue, receipt_handle)

    async def delete_within(
        self, session: AsyncSession, queue: str, receipt_handles: Sequence[str]
    ) -> bool:
        """Delete the messages inside the caller's database transaction, so they go exactly
        when its writes commit, if these queues live in that database; False (nothing done)
        when they do not: then delete them after the commit."""
        return False

    @abc.abstractmethod
    async def change_visibility(
        self, queue: str, receipt_handle: str, visibility_timeout_seconds: int
    ) -> None:
        """Hide a received message for this long from now (0 makes it visible again)."""

    @abc.abstractmethod
    async def retry_later(self, queue: str, message: ReceivedMessage, delay_seconds: int) -> None:
        """Put a received message back, visible in `delay_seconds`, its receive budget fresh.

        It comes back with the same body, `receive_count` 1 at its next receive and
        `retry_attempt` one higher; its message id may change. A stale receipt handle may leave
        a duplicate (at least once) but never loses the message. `delay_seconds` is 0 to
        `MAX_RETRY_DELAY_SECONDS`.
        """

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
