"""PostgreSQL LISTEN/NOTIFY: a process is woken when there is work instead of polling for it.

A notification is a hint, never the work itself. It is sent when the writing transaction
commits, and a listener whose connection dropped (a database restart, a network blip) misses
the ones sent meanwhile, so every waiter keeps a fallback poll and finds such work by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa

log = logging.getLogger(__name__)


def notify(channel: str, payload: str = "") -> sa.Select[Any]:
    """A SELECT that queues a notification on `channel`, delivered when its transaction commits
    (usable as a CTE, so the notification rides on a statement the transaction makes anyway)."""
    return sa.select(sa.func.pg_notify(channel, payload).label("notified"))


class Wakeups:
    """Waiters parked until there is work: one is woken per unit of work (a notification is
    one new row, which one waiter claims), or all of them at once (stopping, a lost LISTEN).

    With `keep_one`, a wake that finds nobody waiting is kept for the next wait (at most one:
    for a single claimer, which may be between a claim that found nothing and its wait when the
    work is committed); without it nothing is kept (many waiters: a busy one finds the work)."""

    def __init__(self, *, keep_one: bool = False) -> None:
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._keep_one = keep_one
        self._kept = False

    def wake_one(self) -> None:
        """Wake the longest-waiting waiter, if any waits (else keep the wake, if `keep_one`)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._kept = self._keep_one

    def wake_all(self) -> None:
        """Wake every current waiter."""
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self, within: float) -> bool:
        """Wait to be woken, or `within` seconds; whether it was woken."""
        if self._kept:
            self._kept = False
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(within):
                await waiter
            return True
        except TimeoutError:
            return False
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)


class Watch:
    """One waiter's interest in a key of `KeyedWakeups`, armed from the moment it is taken: a
    wake that comes before `wait` (while the waiter reads) is kept for it, never lost."""

    def __init__(self) -> None:
        self._woken = False
        self._waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Mark the watch woken and release its waiter, if one waits."""
        self._woken = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, within: float) -> bool:
        """Wait for a wake since the watch began or since the last wait that returned True, or
        `within` seconds; whether it was woken (a woken watch is armed again)."""
        if not self._woken:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(within):
                    await self._waiter
            except TimeoutError:
                return False
            finally:
                self._waiter = None
        self._woken = False
        return True


class KeyedWakeups:
    """Waiters parked per key (the payload of a notification, e.g. an order id): a notification
    wakes every waiter of its key and nobody else; a lost LISTEN wakes every waiter of every
    key, so each looks again at what it waits for."""

    def __init__(self) -> None:
        self._watches: dict[str, set[Watch]] = {}

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[Watch]:
        """A watch on `key` for the block; take it before reading the state it waits on."""
        watch = Watch()
        self._watches.setdefault(key, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(key)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watches[key]

    def wake(self, key: str) -> None:
        """Wake every waiter of `key` (none waiting: nothing is kept)."""
        for watch in self._watches.get(key, ()):
            watch.wake()

    def wake_all(self) -> None:
        """Wake every waiter of every key."""
        for watches in self._watches.values():
            for watch in watches:
                watch.wake()

    def waiting(self, key: str | None = None) -> int:
        """How many watches are open on `key` (on any key, if None)."""
        if key is not None:
            return len(self._watches.get(key, ()))
        return sum(len(watches) for watches in self._watches.values())


class Listener:
    """Keeps a LISTEN on `channel` open on a connection of its own, reopening it with backoff
    when it is lost; each notification whose payload is `payload` (any, if None) wakes one of
    `Wakeups`' waiters, or with `KeyedWakeups` every waiter of the payload's key; a lost
    connection wakes them all."""

    def __init__(
        self,
        database_url: str,
        channel: str,
        wakeups: Wakeups | KeyedWakeups,
        *,
        payload: str | None = None,
        probe_seconds: float = 5.0,
        reconnect_max_seconds: float = 5.0,
    ) -> None:
        # asyncpg's own DSN: SQLAlchemy's driver suffix (postgresql+asyncpg://) is not one.
        self._database_url = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self._channel = channel
        self._wakeups = wakeups
        self._payload = payload
        self._probe_seconds = probe_seconds
        self._reconnect_max_seconds = reconnect_max_seconds
        self.listening = asyncio.Event()
        self.connections = 0  # LISTENs established so far (a reconnect adds one)
        self._established = False

    async def run(self) -> None:
        """Listen until cancelled; a lost connection is logged and reopened."""
        delay = 0.1
        while True:
            self._established = False
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as error:
                if self._established:  # it had worked: start the backoff over
                    delay = 0.1
                log.warning(
                    "LISTEN %s lost (%s); waiters poll until it is back, retrying in %.1fs",
                    self._channel,
                    error,
                    delay,
                )
                # Work committed while nobody listened: let every waiter look for it now.
                self._wakeups.wake_all()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect_max_seconds)

    async def _listen(self) -> None:
        connection = await asyncpg.connect(
            self._database_url,
            timeout=self._probe_seconds,
            server_settings={"application_name": f"listen:{self._channel}"},
        )
        try:
            await connection.add_listener(self._channel, self._on_notification)
            self._established = True
            self.connections += 1
            self.listening.set()
            log.info("listening on %s", self._channel)
            while True:
                await asyncio.sleep(self._probe_seconds)
                # A dead connection says so only when used: ask it something.
                await connection.fetchval("SELECT 1", timeout=self._probe_seconds)
        finally:
            self.listening.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), self._probe_seconds)

    def _on_notification(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if self._payload is not None and payload != self._payload:
            return
        if isinstance(self._wakeups, KeyedWakeups):
            self._wakeups.wake(payload)
        else:
            self._wakeups.wake_one()
