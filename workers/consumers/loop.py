"""The consumer loop: receive a batch from the consumer's queue, process its events, delete them.

A batch is delivered in one transaction (`process_batch`: one inbox claim, the handlers, and the
messages' deletion when the queues live in the consumer's database; else they are deleted right
after the commit). If any of it fails, nothing of the batch commits and its events are delivered
one by one, each in its own transaction, so one bad message never holds back the others and is
treated on its own as below. A message is deleted only after its event was processed (or was a
duplicate, or not for this consumer).

With `wakeups` (the PostgreSQL queues' NOTIFY on send, through a LISTEN of the process's own),
an idle loop waits to be woken instead of long-polling, and looks anyway every
`poll_interval_seconds` (messages whose visibility or retry delay ran out notify nobody; nor
does a send while the LISTEN was down); after a batch that was not full it lets messages gather
for `batch_window_seconds` before receiving again. Without them (SQS) it long-polls
`wait_seconds`.

A failure is one of two kinds:

- transient: something the handler depends on is unavailable (a service answering UNAVAILABLE
  while it restarts, a deadline, the database away). The message is put back with
  `Queues.retry_later`, which does not use up its receives, after a backoff that grows to
  minutes: it waits out the outage and is handled when the dependency is back.
- anything else (a bug, a malformed message, a refusal): the message stays on the queue, hidden
  for a capped exponential backoff with jitter, and the queue moves it to the dead-letter queue
  after its maximum receives.

Nothing is dropped: a message is handled, or it waits in the DLQ for an operator.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

import grpc
import sqlalchemy.exc
from botocore.exceptions import (  # type: ignore[import-untyped]
    ClientError,
    HTTPClientError,
)
from botocore.exceptions import ConnectionError as AwsConnectionError
from opentelemetry import trace

from marketplace.events.v1 import envelope_pb2
from marketplace_platform import grpc_errors
from marketplace_platform.db import UnitOfWork
from marketplace_platform.errors import DependencyUnavailable
from marketplace_platform.event_bus import decode_message_body
from marketplace_platform.notifications import Wakeups
from marketplace_platform.queues import MAX_RETRY_DELAY_SECONDS, Queues, ReceivedMessage
from workers.consumers.consumer import Consumer, process, process_batch

log = logging.getLogger(__name__)

# Gives a failed message back to the queue: hidden for its retry delay, or its backoff.
Release = Callable[[], Awaitable[None]]

# Statuses of a call that met a dependency down, overloaded or too slow, not a refusal.
# SQLSTATEs of a database that is away or overloaded, not of a bad statement: connection
# exceptions (08), insufficient resources (53, e.g. too many connections), shutting down,
# crashed or starting up (57P01-57P03), and a statement timeout (57014).
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53")
_TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57014"})
_AWS_THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "SlowDown"}
)
# How far `raise ... from cause` chains are followed (a wrapped driver error is two deep).
_MAX_CAUSES = 8


@dataclass(frozen=True, kw_only=True)
class LoopOptions:
    """How much to take at once, how long to long-poll (or, woken by notifications, to wait
    for one before looking anyway), how to back off each kind of failure."""

    batch_size: int = 10
    wait_seconds: float = 1.0
    poll_interval_seconds: float = 1.0
    # Woken by notifications: after a batch that was not full, how long to let more messages
    # gather before the next receive (else every message would be a receive of its own).
    batch_window_seconds: float = 0.05
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    unavailable_base_seconds: float = 1.0
    unavailable_max_seconds: float = 300.0


def retry_delay(receive_count: int, options: LoopOptions, rng: random.Random) -> int:
    """Seconds to hide a failed message: full jitter under base * 2^(receives - 1), capped."""
    ceiling = min(options.retry_max_seconds, options.retry_base_seconds * 2 ** (receive_count - 1))
    return max(0, round(rng.uniform(0, ceiling)))


def unavailable_delay(retry_attempt: int, options: LoopOptions, rng: random.Random) -> int:
    """Seconds before the `retry_attempt`-th retry of a transient failure: full jitter, capped."""
    # The exponent is bounded: an outage of days must not overflow the float.
    growth = 2.0 ** min(max(retry_attempt - 1, 0), 60)
    ceiling = min(
        options.unavailable_max_seconds,
        MAX_RETRY_DELAY_SECONDS,
        options.unavailable_base_seconds * growth,
    )
    return max(0, round(rng.uniform(0, ceiling)))


def is_transient(error: BaseException) -> bool:
    """Whether a failure means a dependency is unavailable for now, not that the message is bad."""
    return any(_is_unavailable(link) for link in _causes(error))


def _causes(error: BaseException) -> Iterator[BaseException]:
    # Explicit causes only: SQLAlchemy wraps the driver's error this way. An implicit
    # __context__ (raised while handling another error) says nothing about this failure.
    link: BaseException | None = error
    for _ in range(_MAX_CAUSES):
        if link is None:
            return
        yield link
        link = link.__cause__


def _is_unavailable(error: BaseException) -> bool:
    if isinstance(error, DependencyUnavailable | ConnectionError | TimeoutError):
        return True
    if isinstance(error, grpc.RpcError):
        return grpc_errors.is_transient(error)
    if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(error, sqlalchemy.exc.TimeoutError):  # no pooled connection in time
        return True
    if isinstance(error, AwsConnectionError | HTTPClientError):
        return True
    if isinstance(error, ClientError):
        return _aws_unavailable(error)
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and _transient_sqlstate(sqlstate)


def _aws_unavailable(error: ClientError) -> bool:
    response = getattr(error, "response", {})
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    code = str(response.get("Error", {}).get("Code", ""))
    return status >= 500 or code in _AWS_THROTTLING_CODES


def _transient_sqlstate(sqlstate: str) -> bool:
    return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate in _TRANSIENT_SQLSTATES


def describe(error: BaseException) -> str:
    """One line about a failure: a call's status and details, or the exception's type and text."""
    if isinstance(error, grpc.RpcError):
        return grpc_errors.describe(error)
    return f"{type(error).__name__}: {error}"


class ConsumerLoop:
    """Runs one consumer on one queue until stopped."""

    def __init__(
        self,
        consumer: Consumer,
        queues: Queues,
        queue: str,
        unit_of_work: Callable[[], UnitOfWork],
        options: LoopOptions | None = None,
        *,
        tracer: trace.Tracer | None = None,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.consumer = consumer
        self.queues = queues
        self.queue = queue
        self._unit_of_work = unit_of_work
        self.options = options or LoopOptions()
        self._tracer = tracer
        self.wakeups = wakeups
        self._stopping = asyncio.Event()
        self._rng = random.Random()
        self._owed: collections.deque[Release] = collections.deque()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stopping.set()
        if self.wakeups is not None:
            self.wakeups.wake_all()

    async def run(self) -> None:
        """Receive and process until `stop`."""
        log.info("%s consuming %s", self.consumer.name, self.queue)
        while not self._stopping.is_set():
            try:
                received = await self.poll_once()
            except Exception:
                # The queue itself failed (database or SQS down): wait a little, then poll again.
                log.exception("%s could not receive from %s", self.consumer.name, self.queue)
                await self._pause(self.options.retry_base_seconds)
                continue
            if self.wakeups is None or self._stopping.is_set():
                continue
            if received == 0:
                await self.wakeups.wait(self.options.poll_interval_seconds)
            elif received < self.options.batch_size:
                await self._pause(self.options.batch_window_seconds)

    async def poll_once(self) -> int:
        """Release what an outage left held, receive one batch and settle every message of it;
        returns how many were received (woken by notifications, the receive does not long-poll:
        `run` waits for them)."""
        await self._release_owed()
        messages = await self.queues.receive(
            self.queue,
            max_messages=self.options.batch_size,
            wait_seconds=0 if self.wakeups is not None else self.options.wait_seconds,
        )
        decoded: list[tuple[ReceivedMessage, envelope_pb2.EventEnvelope]] = []
        for message in messages:
            try:
                decoded.append((message, decode_message_body(message.body)))
            except Exception as error:
                await self._failed(message, error)
        if len(decoded) == 1:
            await self._settle(*decoded[0])
        elif decoded:
            await self._settle_batch(decoded)
        return len(messages)

    async def _settle_batch(
        self, decoded: list[tuple[ReceivedMessage, envelope_pb2.EventEnvelope]]
    ) -> None:
        handles = [message.receipt_handle for message, _ in decoded]
        deleted = False

        async def delete(uow: UnitOfWork) -> None:
            nonlocal deleted
            deleted = await self.queues.delete_within(uow.session, self.queue, handles)

        try:
            await process_batch(
                self.consumer,
                [envelope for _, envelope in decoded],
                self._unit_of_work,
                tracer=self._tracer,
                settle=delete,
            )
        except Exception as error:
            log.warning(
                "%s: a batch of %d failed (%s); delivering its events one by one",
                self.consumer.name,
                len(decoded),
                describe(error),
            )
            for message, envelope in decoded:
                await self._settle(message, envelope)
            return
        if not deleted:
            await self.queues.delete_batch(self.queue, handles)

    async def _settle(self, message: ReceivedMessage, envelope: envelope_pb2.EventEnvelope) -> None:
        deleted = False

        async def delete(uow: UnitOfWork) -> None:
            nonlocal deleted
            deleted = await self.queues.delete_within(
                uow.session, self.queue, [message.receipt_handle]
            )

        try:
            await process(
                self.consumer, envelope, self._unit_of_work, tracer=self._tracer, settle=delete
            )
        except Exception as error:
            await self._failed(message, error)
            return
        if not deleted:
            await self.queues.delete(self.queue, message.receipt_handle)

    async def _failed(self, message: ReceivedMessage, error: Exception) -> None:
        release = (
            self._retry_later(message, error)
            if is_transient(error)
            else self._back_off(message, error)
        )
        try:
            await release()
        except Exception as queue_error:
            if not is_transient(queue_error):
                raise
            # The queue is down too (on PostgreSQL it is the consumer's own database): the
            # message stays hidden for its whole visibility timeout unless we release it, as
            # soon as the queue answers again (a stale receipt releases nothing).
            log.warning(
                "%s: could not release message %s (%s); releasing it once the queue answers",
                self.consumer.name,
                message.message_id,
                describe(queue_error),
            )
            self._owed.append(release)

    async def _release_owed(self) -> None:
        """Release the messages the queue could not take back when they failed; raises (the
        rest still owed) while it still cannot."""
        released = 0
        while self._owed:
            try:
                await self._owed[0]()
                released += 1
            except Exception as error:
                if is_transient(error):
                    raise
                log.warning("%s: a held message was not released (%s)", self.consumer.name,
                            describe(error))  # fmt: skip
            self._owed.popleft()
        if released:
            log.info("%s: released %d messages held through the outage", self.consumer.name,
                     released)  # fmt: skip

    def _retry_later(self, message: ReceivedMessage, error: Exception) -> Release:
        attempt = message.retry_attempt + 1
        delay = unavailable_delay(attempt, self.options, self._rng)
        # No traceback: during an outage every message fails the same way, and the line says how.
        log.warning(
            "%s: a dependency is unavailable for message %s (%s); retry %d in %ds, "
            "its receives not counted",
            self.consumer.name,
            message.message_id,
            describe(error),
            attempt,
            delay,
        )
        return functools.partial(self.queues.retry_later, self.queue, message, delay)

    def _back_off(self, message: ReceivedMessage, error: Exception) -> Release:
        delay = retry_delay(message.receive_count, self.options, self._rng)
        log.error(
            "%s failed message %s (receive %d); visible again in %ds",
            self.consumer.name,
            message.message_id,
            message.receive_count,
            delay,
            exc_info=error,
        )
        return functools.partial(
            self.queues.change_visibility, self.queue, message.receipt_handle, delay
        )

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
