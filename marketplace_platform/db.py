"""PostgreSQL through async SQLAlchemy 2 on asyncpg, and the unit of work owning a transaction.

The database URL may be an endpoint that follows the writer: a libpq-style multi-host URL with
`target_session_attrs=read-write` (`?host=h1,h2&port=p1,p2&target_session_attrs=read-write`),
as Aurora's cluster endpoint or a primary with its standby. New connections then reach only a
server that takes writes. Connections made before a failover are dropped: on checkout when their
server is gone, and with the rest of the pool on the first error that says the writer is lost
(the server went away, is shutting down or starting up, or takes no writes any more). While no
writer can be reached, connection attempts back off (`ConnectBackoff`), and a unit of work that
loses the writer raises DependencyUnavailable, which callers retry.

Every connection also says which Region epoch its process writes as (`REGION_EPOCH`, sent as
the setting `marketplace.region_epoch`), and the database refuses a write from any other epoch
than its fence's (marketplace_platform.fence): a process of a Region that was failed away from
reaches the new writer but cannot write as the primary. Such a refusal is `Fenced`, a kind of
both DependencyUnavailable and NoWriter (no writer for this process here), and drops the pool
like a lost writer; `ping` fails while the fence's epoch is not the process's.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, overload

from google.protobuf.message import Message
from sqlalchemy import event, exc, text
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from marketplace.events.v1 import envelope_pb2
from marketplace_platform.errors import DependencyUnavailable
from marketplace_platform.outbox import OutboxWriter
from marketplace_platform.settings import ServiceSettings, to_asyncpg_url

# SQLSTATEs after which a connection must not be used again, nor the rest of its pool (every
# connection of it points at the same server): a connection exception (class 08), the server
# shutting down or crashed (57P01, 57P02), still starting up or in recovery (57P03), or taking
# no writes (25006: a standby, or a primary that was demoted).
# Also refused by the Region fence (MPF01): this server's writer is another Region epoch's.
FENCED_SQLSTATE = "MPF01"
_WRITER_LOST_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03", FENCED_SQLSTATE})
_CONNECTION_EXCEPTION_CLASS = "08"
# A statement cancelled (the statement timeout) or a lock not granted (the lock timeout): the
# database is busy, not failing; nothing was committed.
_BUSY_SQLSTATES = frozenset({"57014", "55P03"})
_MAX_CAUSES = 8  # how far `raise ... from` chains are followed (SQLAlchemy wraps the driver's)
REGION_EPOCH_SETTING = "marketplace.region_epoch"
# Whether the server takes writes, the epoch this session writes as (none: not fenced) and
# whether the database has a fence (a database no migration ran on has none).
_IS_WRITER = text(
    "SELECT NOT pg_is_in_recovery() AND current_setting('transaction_read_only') = 'off',"
    f" current_setting('{REGION_EPOCH_SETTING}', true),"
    " to_regclass('platform.region_fence') IS NOT NULL"
)
_FENCE_EPOCH = text("SELECT epoch FROM platform.region_fence")


class NoWriter(ConnectionError):
    """No server that takes writes can be reached right now (none answers, or those that do
    are standbys or read-only), or connecting waits out its backoff after such a failure."""


class Fenced(DependencyUnavailable, NoWriter):
    """The database's Region fence holds another epoch than this process's: the writer is
    another Region's, and this process may not write there (its writes are refused). Callers
    treat it as no writer here: unavailable, to retry elsewhere or after a restart with the
    fence's epoch."""


def fenced(error: BaseException) -> Fenced | None:
    """The Fenced that a failure (or the driver error that caused it) means, if the Region
    fence refused it; else None."""
    link: BaseException | None = error
    for _ in range(_MAX_CAUSES):
        if link is None or isinstance(link, Fenced):
            return link
        if getattr(link, "sqlstate", None) == FENCED_SQLSTATE:
            return Fenced(str(link.__cause__ or link).strip())
        link = link.__cause__
    return None


def writer_lost(error: BaseException) -> bool:
    """Whether a failure (or the driver error that caused it) means the database's writer is
    out of reach: its connection died or was refused, the server is going or coming, or it
    takes no writes. Not a constraint violation, a statement timeout or any other refusal."""
    link: BaseException | None = error
    for _ in range(_MAX_CAUSES):
        if link is None:
            return False
        if isinstance(link, OSError | exc.DisconnectionError):
            return True
        if isinstance(link, exc.DBAPIError) and link.connection_invalidated:
            return True
        if _lost_sqlstate(getattr(link, "sqlstate", None)):
            return True
        if type(link).__name__ == "TargetServerAttributeNotMatched":  # asyncpg: no writer
            return True
        link = link.__cause__
    return False


def database_busy(error: BaseException) -> bool:
    """Whether a failure (or the driver error that caused it) means the database is only busy:
    no pooled connection came free within the pool's timeout, or a statement ran past the
    statement or lock timeout (queued behind a row lock in a burst, say). Nothing was
    committed, so the call may be retried as it is."""
    link: BaseException | None = error
    for _ in range(_MAX_CAUSES):
        if link is None:
            return False
        if isinstance(link, exc.TimeoutError) or getattr(link, "sqlstate", None) in _BUSY_SQLSTATES:
            return True
        link = link.__cause__
    return False


def _lost_sqlstate(sqlstate: object) -> bool:
    return isinstance(sqlstate, str) and (
        sqlstate in _WRITER_LOST_SQLSTATES or sqlstate.startswith(_CONNECTION_EXCEPTION_CLASS)
    )


class ConnectBackoff:
    """Connection attempts of one engine, spaced out while they fail: after a failed attempt
    the next may start only after a delay that doubles with each failure (from `base` up to
    `cap` seconds, jittered); meanwhile connecting fails at once with NoWriter. One success
    ends the backoff. Requests fail fast during an outage instead of piling up connection
    attempts on a server that is down or still recovering."""

    def __init__(self, *, base: float = 0.05, cap: float = 1.0) -> None:
        self._base = base
        self._cap = cap
        self._failures = 0
        self._not_before = 0.0

    def connect(
        self, dialect: Dialect, record: ConnectionPoolEntry, cargs: Any, cparams: Any
    ) -> Any:
        """Connect as the dialect would, unless the backoff says not yet (a `do_connect`
        handler: what it returns is the new connection)."""
        wait = self._not_before - time.monotonic()
        if wait > 0:
            raise NoWriter(f"no writer reachable; next connection attempt in {wait:.2f}s")
        try:
            connection = dialect.connect(*cargs, **cparams)
        except Exception:
            delay = min(self._cap, self._base * 2**self._failures)
            self._failures += 1
            self._not_before = time.monotonic() + random.uniform(delay / 2, delay)
            raise
        self._failures = 0
        self._not_before = 0.0
        return connection


def _drop_closed(
    dbapi_connection: Any, record: ConnectionPoolEntry, proxy: PoolProxiedConnection
) -> None:
    """A pool checkout handler: a connection whose server closed it (killed, restarted) is
    replaced by a new one before anybody uses it; asking the driver costs no round trip."""
    if dbapi_connection._connection.is_closed():
        raise exc.DisconnectionError("the server closed this connection")


def _invalidate_on_writer_loss(context: ExceptionContext) -> None:
    """A handle_error handler: an error that says the writer is lost invalidates the
    connection and the whole pool, so no connection to that server is used for writes again."""
    if writer_lost(context.original_exception):
        context.is_disconnect = True


def create_engine(settings: ServiceSettings, *, url: str | None = None) -> AsyncEngine:
    """An engine with a bounded pool, a statement timeout and the service as application name,
    on the service's database (or on `url`, e.g. a reader endpoint of the same database), that
    follows the writer across a failover (the module's docstring)."""
    engine = create_async_engine(
        settings.sqlalchemy_url if url is None else to_asyncpg_url(url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_timeout=settings.default_call_timeout_seconds,
        connect_args={
            "timeout": settings.default_call_timeout_seconds,
            "server_settings": {
                "application_name": settings.service_name,
                "statement_timeout": str(settings.db_statement_timeout_ms),
                REGION_EPOCH_SETTING: str(settings.region_epoch),
            },
        },
    )
    backoff = ConnectBackoff()
    event.listen(engine.sync_engine, "do_connect", backoff.connect)
    event.listen(engine.sync_engine, "checkout", _drop_closed)
    event.listen(engine.sync_engine, "handle_error", _invalidate_on_writer_loss)
    return engine


async def ping(engine: AsyncEngine) -> None:
    """Raise unless the engine reaches the writer: a server that answers AND takes writes (a
    standby or a demoted primary answers too), else NoWriter, and whose Region fence holds
    the epoch this process writes as, else Fenced (a database without a fence, which no
    migration ran on, has nothing to compare). A connection to a server that takes no writes
    is dropped with the rest of the pool."""
    fence: int | None = None
    try:
        async with engine.connect() as connection:
            is_writer, own, fenced_here = (await connection.execute(_IS_WRITER)).one()
            if not is_writer:
                await connection.invalidate()
            elif own and fenced_here:
                fence = (await connection.execute(_FENCE_EPOCH)).scalar_one()
    except NoWriter:
        raise
    except Exception as error:
        if writer_lost(error):
            raise NoWriter(f"no writer: {error}") from error
        raise
    if not is_writer:
        await engine.dispose()
        raise NoWriter("the database answers but takes no writes")
    if fence is not None and int(own) != fence:
        raise Fenced(f"fenced: this process writes as Region epoch {own}, the fence is at {fence}")


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
        except Exception as error:
            if refusal := fenced(error):
                raise refusal from error
            if writer_lost(error):
                raise DependencyUnavailable("the database has no writer right now") from error
            if database_busy(error):
                raise DependencyUnavailable(f"the database is busy ({error}); retry") from error
            raise
        finally:
            self._published = []
            await self.session.close()
        if exc is not None and (refusal := fenced(exc)):
            raise refusal from exc
        if exc is not None and writer_lost(exc):
            # Unavailable, not a failure of the request: callers retry it (a commit whose
            # answer was lost may have been applied; every write is idempotent by its key).
            raise DependencyUnavailable("the database has no writer right now") from exc
        if exc is not None and database_busy(exc):
            # Busy, not failed: nothing was committed, and callers retry with backoff.
            raise DependencyUnavailable(f"the database is busy ({exc}); retry") from exc

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
