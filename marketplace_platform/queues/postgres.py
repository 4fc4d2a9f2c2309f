"""The local adapter of the queue port: SQS semantics on one PostgreSQL table.

Receivers claim rows with `FOR UPDATE SKIP LOCKED` and hide them by moving `visible_at`
forward, so several consumers share a queue without handing one message to two of them at once.
A receive first moves the visible messages that already used up their receives to the DLQ.
`retry_later` is one UPDATE of the row (same message id, fresh receive count), so it is atomic.

A send also queues a NOTIFY on the queue's channel (`queue_channel`), in its INSERT statement,
so consumers that LISTEN there receive at once instead of polling, unless a message of the queue
became visible less than `BUSY_SECONDS` ago and still waits (its receivers are awake or being
woken; a message nobody takes ages past that, and the next send notifies). Messages that become
visible later (a visibility timeout or a retry delay running out) send none and are found by
their receivers' fallback poll. `delete_batch` can settle messages inside the consumer's own
transaction, when its database is the queues' database.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from marketplace_platform.queues import (
    QueueDefinition,
    Queues,
    QueueStats,
    ReceivedMessage,
    UnknownQueue,
    check_retry_delay,
)

log = logging.getLogger(__name__)

# How often a long poll looks again; short enough to feel like SQS's immediate wake-up.
LONG_POLL_INTERVAL_SECONDS = 0.05
# A visible message younger than this says its receivers are awake: a send adds no NOTIFY (a
# notifying commit holds a server-wide lock until it is flushed).
BUSY_SECONDS = 0.2
BUSY_MILLISECONDS = round(BUSY_SECONDS * 1000)
DLQ_VISIBILITY_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class _Policy:
    visibility_timeout_seconds: int
    max_receive_count: int | None
    dead_letter_queue: str | None


_MOVE_DEAD = text(
    """
    UPDATE queues.messages SET queue = :dlq, dead_from = :queue,
        visible_at = clock_timestamp(), receipt_token = NULL
    WHERE id IN (
        SELECT id FROM queues.messages
        WHERE queue = :queue AND visible_at <= clock_timestamp() AND receive_count >= :max
        FOR UPDATE SKIP LOCKED
    )
    """
)

_RECEIVE = text(
    """
    UPDATE queues.messages AS m SET receive_count = m.receive_count + 1,
        visible_at = clock_timestamp() + make_interval(secs => :timeout),
        receipt_token = gen_random_uuid()
    FROM (
        SELECT id FROM queues.messages
        WHERE queue = :queue AND visible_at <= clock_timestamp()
        ORDER BY visible_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ) AS picked
    WHERE m.id = picked.id
    RETURNING m.id, m.message_id, m.receipt_token, m.body, m.receive_count, m.sent_at,
        m.retry_attempt
    """
)

# The CTE is selected from, so it runs: at most one NOTIFY per send, whatever the number of
# messages, and none while the queue's oldest visible message became visible less than
# BUSY_SECONDS ago (a receiver is on the queue, or is about to be woken for it).
_SEND = text(
    f"""
    WITH notified AS (
        SELECT CASE WHEN coalesce((
            SELECT visible_at FROM queues.messages
            WHERE queue = :queue AND visible_at <= clock_timestamp()
            ORDER BY visible_at, id LIMIT 1
        ), '-infinity') < clock_timestamp() - interval '{BUSY_MILLISECONDS} milliseconds'
        THEN pg_notify(:channel, '') END AS notified
    )
    INSERT INTO queues.messages (message_id, queue, body, sent_at, visible_at)
    SELECT message_id, :queue, body, clock_timestamp(), clock_timestamp()
    FROM unnest(CAST(:message_ids AS uuid[]), CAST(:bodies AS text[]))
        WITH ORDINALITY AS sent(message_id, body, position), notified
    ORDER BY position
    """
)

_DELETE = text(
    "DELETE FROM queues.messages"
    " WHERE queue = :queue AND message_id = :message_id AND receipt_token = :token"
)

_DELETE_BATCH = text(
    """
    DELETE FROM queues.messages AS m
    USING unnest(CAST(:message_ids AS uuid[]), CAST(:tokens AS uuid[])) AS settled(id, token)
    WHERE m.queue = :queue AND m.message_id = settled.id AND m.receipt_token = settled.token
    """
)

_CHANGE_VISIBILITY = text(
    """
    UPDATE queues.messages SET visible_at = clock_timestamp() + make_interval(secs => :timeout)
    WHERE queue = :queue AND message_id = :message_id AND receipt_token = :token
    """
)

# The receive budget starts again and the old receipt handle stops working; sent_at stays, so
# the queue's oldest-message age still tells operators how long the message has waited.
_RETRY_LATER = text(
    """
    UPDATE queues.messages SET receive_count = 0, retry_attempt = retry_attempt + 1,
        visible_at = clock_timestamp() + make_interval(secs => :delay), receipt_token = NULL
    WHERE queue = :queue AND message_id = :message_id AND receipt_token = :token
    """
)

_STATS = text(
    """
    SELECT count(*) FILTER (WHERE visible_at <= clock_timestamp()) AS visible,
        count(*) FILTER (WHERE visible_at > clock_timestamp()) AS in_flight,
        extract(epoch FROM clock_timestamp() - min(sent_at)) AS oldest_age
    FROM queues.messages WHERE queue = :queue
    """
)

_PEEK = text(
    "SELECT message_id, body, receive_count, sent_at, retry_attempt FROM queues.messages"
    " WHERE queue = :queue ORDER BY id LIMIT :limit"
)

_REDRIVE = text(
    """
    UPDATE queues.messages SET queue = :queue, dead_from = NULL, receive_count = 0,
        retry_attempt = 0, receipt_token = NULL, visible_at = clock_timestamp()
    WHERE id IN (
        SELECT id FROM queues.messages
        WHERE queue = :dlq AND visible_at <= clock_timestamp()
        ORDER BY id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    """
)


# PostgreSQL's longest identifier, which a channel name must fit.
_MAX_CHANNEL_BYTES = 63


def queue_channel(queue: str) -> str:
    """The LISTEN/NOTIFY channel of a queue: its name, or a digest of a name too long for one."""
    channel = f"queue:{queue}"
    if len(channel.encode()) <= _MAX_CHANNEL_BYTES:
        return channel
    return f"queue:{hashlib.sha256(queue.encode()).hexdigest()[:40]}"


def _receipt_handle(message_id: uuid.UUID, token: uuid.UUID) -> str:
    return f"{message_id}:{token}"


def _parse_receipt_handle(handle: str) -> tuple[uuid.UUID, uuid.UUID]:
    message_id, _, token = handle.partition(":")
    try:
        return uuid.UUID(message_id), uuid.UUID(token)
    except ValueError:
        raise ValueError(f"not a receipt handle: {handle!r}") from None


class PostgresQueues(Queues):
    """The declared queues (and their DLQs) as rows of `queues.messages`."""

    def __init__(self, engine: AsyncEngine, definitions: Sequence[QueueDefinition]) -> None:
        self._engine = engine
        self._definitions = tuple(definitions)
        self._policies: dict[str, _Policy] = {}
        for definition in self._definitions:
            self._policies[definition.dead_letter_queue] = _Policy(
                DLQ_VISIBILITY_TIMEOUT_SECONDS, None, None
            )
        for definition in self._definitions:
            self._policies[definition.name] = _Policy(
                definition.visibility_timeout_seconds,
                definition.max_receive_count,
                definition.dead_letter_queue,
            )

    def definitions(self) -> Sequence[QueueDefinition]:
        """The declared queues (not their DLQs)."""
        return self._definitions

    def _policy(self, queue: str) -> _Policy:
        try:
            return self._policies[queue]
        except KeyError:
            raise UnknownQueue(queue) from None

    async def send(self, queue: str, body: str) -> str:
        """Put one message on `queue`; returns its message id."""
        (message_id,) = await self.send_batch(queue, [body])
        return message_id

    async def send_batch(self, queue: str, bodies: Sequence[str]) -> list[str]:
        """Put several messages on `queue` in one transaction; returns their ids in order."""
        self._policy(queue)
        if not bodies:
            return []
        message_ids = [uuid.uuid4() for _ in bodies]
        async with self._engine.begin() as connection:
            await connection.execute(
                _SEND,
                {
                    "queue": queue,
                    "channel": queue_channel(queue),
                    "message_ids": message_ids,
                    "bodies": list(bodies),
                },
            )
        return [str(message_id) for message_id in message_ids]

    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        visibility_timeout_seconds: int | None = None,
        wait_seconds: float = 0,
    ) -> list[ReceivedMessage]:
        """Up to `max_messages` visible messages, hidden for the visibility timeout."""
        policy = self._policy(queue)
        timeout = (
            policy.visibility_timeout_seconds
            if visibility_timeout_seconds is None
            else visibility_timeout_seconds
        )
        deadline = time.monotonic() + wait_seconds
        while True:
            received = await self._receive_once(queue, policy, max_messages, timeout)
            remaining = deadline - time.monotonic()
            if received or remaining <= 0:
                return received
            await asyncio.sleep(min(LONG_POLL_INTERVAL_SECONDS, remaining))

    async def _receive_once(
        self, queue: str, policy: _Policy, limit: int, hide_seconds: int
    ) -> list[ReceivedMessage]:
        async with self._engine.begin() as connection:
            if policy.max_receive_count is not None:
                moved = await connection.execute(
                    _MOVE_DEAD,
                    {
                        "queue": queue,
                        "dlq": policy.dead_letter_queue,
                        "max": policy.max_receive_count,
                    },
                )
                if moved.rowcount:
                    log.warning(
                        "moved %d message(s) from %s to %s after %d receives",
                        moved.rowcount,
                        queue,
                        policy.dead_letter_queue,
                        policy.max_receive_count,
                    )
            rows = (
                await connection.execute(
                    _RECEIVE, {"queue": queue, "limit": limit, "timeout": float(hide_seconds)}
                )
            ).all()
        return [
            ReceivedMessage(
                message_id=str(row.message_id),
                receipt_handle=_receipt_handle(row.message_id, row.receipt_token),
                body=row.body,
                receive_count=row.receive_count,
                sent_at=row.sent_at,
                retry_attempt=row.retry_attempt,
            )
            for row in sorted(rows, key=lambda row: row.id)
        ]

    async def delete(self, queue: str, receipt_handle: str) -> None:
        """Remove a received message; a stale handle (it was received again since) does nothing."""
        self._policy(queue)
        message_id, token = _parse_receipt_handle(receipt_handle)
        async with self._engine.begin() as connection:
            await connection.execute(
                _DELETE, {"queue": queue, "message_id": message_id, "token": token}
            )

    async def delete_batch(
        self,
        queue: str,
        receipt_handles: Sequence[str],
        *,
        connection: AsyncConnection | None = None,
    ) -> None:
        """Remove several received messages in one statement; stale handles do nothing. On
        `connection` (a transaction of the caller's on the queues' database), it commits or
        rolls back with the caller's own writes."""
        self._policy(queue)
        if not receipt_handles:
            return
        parsed = [_parse_receipt_handle(handle) for handle in receipt_handles]
        parameters = {
            "queue": queue,
            "message_ids": [message_id for message_id, _ in parsed],
            "tokens": [token for _, token in parsed],
        }
        if connection is not None:
            await connection.execute(_DELETE_BATCH, parameters)
            return
        async with self._engine.begin() as own:
            await own.execute(_DELETE_BATCH, parameters)

    async def delete_within(
        self, session: AsyncSession, queue: str, receipt_handles: Sequence[str]
    ) -> bool:
        """Delete the messages in the session's transaction when it is on the queues' database."""
        connection = await session.connection()
        if connection.engine.url != self._engine.url:
            return False
        await self.delete_batch(queue, receipt_handles, connection=connection)
        return True

    async def change_visibility(
        self, queue: str, receipt_handle: str, visibility_timeout_seconds: int
    ) -> None:
        """Hide a received message for this long from now (0 makes it visible again)."""
        self._policy(queue)
        message_id, token = _parse_receipt_handle(receipt_handle)
        async with self._engine.begin() as connection:
            await connection.execute(
                _CHANGE_VISIBILITY,
                {
                    "queue": queue,
                    "message_id": message_id,
                    "token": token,
                    "timeout": float(visibility_timeout_seconds),
                },
            )

    async def retry_later(self, queue: str, message: ReceivedMessage, delay_seconds: int) -> None:
        """Hide the message for `delay_seconds` with a fresh receive budget, in one UPDATE."""
        self._policy(queue)
        check_retry_delay(delay_seconds)
        message_id, token = _parse_receipt_handle(message.receipt_handle)
        async with self._engine.begin() as connection:
            await connection.execute(
                _RETRY_LATER,
                {
                    "queue": queue,
                    "message_id": message_id,
                    "token": token,
                    "delay": float(delay_seconds),
                },
            )

    async def stats(self, queue: str) -> QueueStats:
        """Depth and oldest-message age of `queue`."""
        self._policy(queue)
        async with self._engine.connect() as connection:
            row = (await connection.execute(_STATS, {"queue": queue})).one()
        age = None if row.oldest_age is None else float(row.oldest_age)
        return QueueStats(queue, int(row.visible), int(row.in_flight), age)

    async def peek(self, queue: str, *, max_messages: int = 10) -> list[ReceivedMessage]:
        """The oldest messages of `queue`, untouched; their receipt handles delete nothing."""
        self._policy(queue)
        async with self._engine.connect() as connection:
            rows = (await connection.execute(_PEEK, {"queue": queue, "limit": max_messages})).all()
        return [
            ReceivedMessage(
                str(row.message_id), "", row.body, row.receive_count, row.sent_at, row.retry_attempt
            )
            for row in rows
        ]

    async def redrive(self, queue: str, *, max_messages: int | None = None) -> int:
        """Move visible dead letters of `queue` back to it, with fresh receive and retry counts."""
        policy = self._policy(queue)
        if policy.dead_letter_queue is None:
            raise UnknownQueue(f"{queue} has no dead-letter queue")
        async with self._engine.begin() as connection:
            moved = await connection.execute(
                _REDRIVE,
                {"queue": queue, "dlq": policy.dead_letter_queue, "limit": max_messages},
            )
        log.info(
            "redrove %d message(s) from %s to %s", moved.rowcount, policy.dead_letter_queue, queue
        )
        return int(moved.rowcount)
