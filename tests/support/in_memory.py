"""The frame of the service-layer tests' units of work over in-memory state.

A fake unit of work must behave as a transaction does, or the tests prove nothing: entering
takes a working copy of the state (`begin`), a clean exit makes it the state (`commit`), an
error leaves the state as it was (`roll_back`). Each service's fake says what its state is.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from google.protobuf.message import Message

from marketplace.events.v1 import envelope_pb2
from marketplace_platform.outbox import OutboxWriter


class InMemoryUnitOfWork:
    """Enter, then commit on a clean exit or roll back on an error; events are kept in
    `published` unless a fake records them with its own state."""

    published: list[Message]

    async def __aenter__(self) -> Self:
        self.published = []
        self.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.roll_back()

    def begin(self) -> None:
        """Take the working copy the transaction writes to."""
        raise NotImplementedError

    def commit(self) -> None:
        """Make the working copy the state."""
        raise NotImplementedError

    def roll_back(self) -> None:
        """Drop the working copy (the state was never touched)."""

    async def publish(
        self, payload: Message, *, aggregate_type: str, aggregate_id: str
    ) -> envelope_pb2.EventEnvelope:
        """Keep the event with this transaction."""
        self.published.append(payload)
        return envelope_pb2.EventEnvelope(aggregate_type=aggregate_type, aggregate_id=aggregate_id)


def checked_envelope(
    outbox: OutboxWriter, payload: Message, *, aggregate_type: str, aggregate_id: str
) -> envelope_pb2.EventEnvelope:
    """The envelope the service's outbox would write for `payload`, refusing (as the outbox
    does) an event or envelope that breaks its contract's field rules."""
    return outbox.checked_envelope(
        payload, aggregate_type=aggregate_type, aggregate_id=aggregate_id
    )
