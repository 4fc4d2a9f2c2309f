"""PostgreSQL through async SQLAlchemy 2 on asyncpg, and the unit of work owning a transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, TypeVar, overload

from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from marketplace.events.v1 import envelope_pb2
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.settings import ServiceSettings, to_asyncpg_url


def create_engine(settings: ServiceSettings, *, url: str | None = None) -> AsyncEngine:
    """An engine with a bounded pool, a statement timeout and the service as application name,
    on the service's database (or on `url`, e.g. a reader endpoint of the same database)."""
    return create_async_engine(
        settings.sqlalchemy_url if url is None else to_asyncpg_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.default_call_timeout_seconds,
        connect_args={
            "timeout": settings.default_call_timeout_seconds,
            "server_settings": {
                "application_name": settings.service_name,
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        },
    )


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the database answers a trivial query."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


class AbstractUnitOfWork(Protocol):
    """A unit of work as use cases see it: entering begins a transaction, a clean exit commits
    it, an error rolls it back, and events published inside it land with its writes. Each
    service's abstract unit of work extends this with its repositories."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def publish(
        self, payload: Message, *, aggregate_type: str, aggregate_id: str
    ) -> envelope_pb2.EventEnvelope:
        """Record an event in the outbox, inside this transaction."""
        ...


class UnitOfWork:
    """One database transaction: entering begins it, a clean exit commits, an error rolls back.

    Use cases write their state and their events (outbox rows) through the same unit of work,
    so both land together or not at all; they never commit themselves. The events published in
    a transaction are written together, in one INSERT just before it commits, in the order
    they were published. A service subclasses it to expose its repositories (`uow.orders`,
    `uow.keys`), bound to the transaction's session in `_bind`, so its use cases never build a
    repository themselves.
    """

    session: AsyncSession

    def __init__(self, sessions: async_sessionmaker[AsyncSession], outbox: OutboxWriter) -> None:
        self._sessions = sessions
        self._outbox = outbox
        self._published: list[envelope_pb2.EventEnvelope] = []

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        self._published = []
        await self.session.begin()
        self._bind(self.session)
        return self

    def _bind(self, session: AsyncSession) -> None:
        """Attach the service's repositories to this transaction's session (none here)."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                # The outbox rows in the transaction, at its end: a failed insert commits
                # nothing (closing the session rolls the transaction back).
                await self._outbox.write(self.session, self._published)
                await self.session.commit()
            else:
                await self.session.rollback()
        finally:
            self._published = []
            await self.session.close()

    async def publish(
        self, payload: Message, *, aggregate_type: str, aggregate_id: str
    ) -> envelope_pb2.EventEnvelope:
        """Record an event in the outbox, inside this transaction (written at its commit); a
        malformed event is refused (ValueError) here, at once."""
        envelope = self._outbox.checked_envelope(
            payload, aggregate_type=aggregate_type, aggregate_id=aggregate_id
        )
        self._published.append(envelope)
        return envelope


_NOW = text("SELECT now()")


class TransactionClock:
    """The database's time of one transaction, read at most once.

    PostgreSQL's `now()` is fixed for the whole transaction, so a statement that returns it
    beside its own columns (`note`) spares the transaction a `SELECT now()` of its own when a
    use case later asks the time; one that has read nothing yet asks the database.
    """

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._now: datetime | None = None

    def note(self, now: datetime) -> None:
        """Remember the transaction's now() as a statement of this transaction returned it."""
        self._now = now

    async def now(self) -> datetime:
        """The transaction's now()."""
        if self._now is None:
            self._now = (await self._session.execute(_NOW)).scalar_one()
        return self._now


U = TypeVar("U", bound=UnitOfWork)


@overload
def unit_of_work_factory(engine: AsyncEngine, outbox: OutboxWriter) -> Callable[[], UnitOfWork]: ...
@overload
def unit_of_work_factory(
    engine: AsyncEngine, outbox: OutboxWriter, kind: type[U]
) -> Callable[[], U]: ...
def unit_of_work_factory(
    engine: AsyncEngine, outbox: OutboxWriter, kind: type[UnitOfWork] = UnitOfWork
) -> Callable[[], UnitOfWork]:
    """A callable that opens a fresh unit of work (of the service's `kind`) for each use."""
    sessions = async_sessionmaker(engine, expire_on_commit=False, autobegin=False)
    return lambda: kind(sessions, outbox)
