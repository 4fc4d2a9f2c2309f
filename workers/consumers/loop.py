"""The consumer loop: receive from the consumer's queue, process each event, delete it.

A message is deleted only after its event was processed (or was a duplicate, or not for this
consumer). A failure leaves it on the queue, hidden for a capped exponential backoff with
jitter; the queue moves it to the dead-letter queue after its maximum receives, so nothing is
dropped: it is handled, or it waits in the DLQ for an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry import trace

from marketplace_platform.db import UnitOfWork
from marketplace_platform.event_bus import decode_message_body
from marketplace_platform.queues import Queues, ReceivedMessage
from workers.consumers.consumer import Consumer, process

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class LoopOptions:
    """How much to take at once, how long to long-poll, how to back off a failing message."""

    batch_size: int = 10
    wait_seconds: float = 1.0
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0


def retry_delay(receive_count: int, options: LoopOptions, rng: random.Random) -> int:
    """Seconds to hide a failed message: full jitter under base * 2^(receives - 1), capped."""
    ceiling = min(options.retry_max_seconds, options.retry_base_seconds * 2 ** (receive_count - 1))
    return max(0, round(rng.uniform(0, ceiling)))


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
    ) -> None:
        self.consumer = consumer
        self.queues = queues
        self.queue = queue
        self._unit_of_work = unit_of_work
        self.options = options or LoopOptions()
        self._tracer = tracer
        self._stopping = asyncio.Event()
        self._rng = random.Random()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self._stopping.set()

    async def run(self) -> None:
        """Poll and process until `stop`."""
        log.info("%s consuming %s", self.consumer.name, self.queue)
        while not self._stopping.is_set():
            try:
                await self.poll_once()
            except Exception:
                # The queue itself failed (database or SQS down): wait a little, then poll again.
                log.exception("%s could not receive from %s", self.consumer.name, self.queue)
                await self._pause(self.options.retry_base_seconds)

    async def poll_once(self) -> int:
        """Receive one batch and settle every message of it; returns how many were received."""
        messages = await self.queues.receive(
            self.queue,
            max_messages=self.options.batch_size,
            wait_seconds=self.options.wait_seconds,
        )
        await asyncio.gather(*(self._settle(message) for message in messages))
        return len(messages)

    async def _settle(self, message: ReceivedMessage) -> None:
        try:
            envelope = decode_message_body(message.body)
            await process(self.consumer, envelope, self._unit_of_work, tracer=self._tracer)
        except Exception:
            delay = retry_delay(message.receive_count, self.options, self._rng)
            log.exception(
                "%s failed message %s (receive %d); visible again in %ds",
                self.consumer.name,
                message.message_id,
                message.receive_count,
                delay,
            )
            await self.queues.change_visibility(self.queue, message.receipt_handle, delay)
            return
        await self.queues.delete(self.queue, message.receipt_handle)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
