"""Fact sinks: date-partitioned JSON-lines objects in the object store (a local folder or S3),
or one local JSON-lines file.

`PartitionedFactSink` is the one the stack and AWS use: `order_facts/dt=YYYY-MM-DD/` objects, one
per batch and day, that Athena queries through a Glue table. `JsonLinesFactSink` appends to one
file, idempotent by fact id: it reads what other writers appended since its last look, under an
exclusive file lock, before it appends. `append_many` adds a batch's facts at once.
"""

from __future__ import annotations

import abc
import asyncio
import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from marketplace_platform.object_store import ObjectStore
from workers.consumers.analytics import written
from workers.consumers.documents import canonical_json

# One fact to add: its id (the event id), when it happened, and the fact itself.
Fact = tuple[str, datetime, dict[str, Any]]


class FactSink(abc.ABC):
    """Where order facts go."""

    @abc.abstractmethod
    async def append(self, fact_id: str, occurred_at: datetime, fact: dict[str, Any]) -> bool:
        """Add the fact unless a fact with this id is there; True if it was added."""

    async def append_many(self, facts: Sequence[Fact], session: AsyncSession | None = None) -> int:
        """Add each fact whose id is not there yet; how many were added (one `append` each).
        `session` is the inbox's, when the facts are handled in its transaction."""
        added = 0
        for fact_id, occurred_at, fact in facts:
            added += await self.append(fact_id, occurred_at, fact)
        return added


class JsonLinesFactSink(FactSink):
    """Appends facts to one local JSON-lines file, each line carrying its `fact_id`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: set[str] = set()
        self._offset = 0
        self._lock = threading.Lock()

    async def append(self, fact_id: str, occurred_at: datetime, fact: dict[str, Any]) -> bool:
        """Append the fact as one line, unless the file already holds its id."""
        return await self.append_many([(fact_id, occurred_at, fact)]) == 1

    async def append_many(self, facts: Sequence[Fact], session: AsyncSession | None = None) -> int:
        """Append the facts whose ids the file does not hold, one line each, in one write."""
        lines = [
            (fact_id, canonical_json({"fact_id": fact_id, **fact}) + b"\n")
            for fact_id, _, fact in facts
        ]
        return await asyncio.to_thread(self._append, lines)

    def _append(self, lines: list[tuple[str, bytes]]) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path, "a+b") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            self._catch_up(file)
            new: dict[str, bytes] = {}
            for fact_id, line in lines:
                if fact_id not in self._seen:
                    new.setdefault(fact_id, line)
            if not new:
                return 0
            file.seek(0, os.SEEK_END)
            file.write(b"".join(new.values()))
            file.flush()
            os.fsync(file.fileno())
            self._offset = file.tell()
            self._seen.update(new)
            return len(new)

    def _catch_up(self, file: Any) -> None:
        """Learn the ids appended since the last look; cut a torn last line of a crashed writer."""
        file.seek(self._offset)
        position = self._offset
        for raw in file:
            if not raw.endswith(b"\n"):
                file.truncate(position)
                break
            position += len(raw)
            self._seen.add(str(json.loads(raw)["fact_id"]))
        self._offset = position

    def facts(self) -> list[dict[str, Any]]:
        """Every fact in the file (for tests and operators)."""
        if not self.path.exists():
            return []
        with open(self.path, "rb") as file:
            return [json.loads(raw) for raw in file if raw.endswith(b"\n")]


class PartitionedFactSink(FactSink):
    """Immutable JSON-lines objects partitioned by the facts' UTC day, Hive style:
    `order_facts/dt=YYYY-MM-DD/<name>.jsonl` in an object store (a local folder or S3).

    A batch becomes one object per day its facts happened on (the event's `occurred_at` in
    UTC, not the clock at writing), one line per fact, sorted by fact id, named by the SHA-256
    of its fact ids. Objects are written once and never replaced (`put_if_absent`), so a query
    engine (Athena over the Glue table) reads a partition as the union of its objects.

    Why no fact is counted twice. The inbox row of an event commits after its object was
    written, in the transaction the handler runs in (`session`). A redelivery after that commit
    is a duplicate the inbox skips: nothing is written. A failure before the commit (a failed
    batch, a crash) redelivers the events, maybe grouped otherwise (a failed batch comes back
    one event at a time). So, given the inbox's session, the sink first commits which object
    will hold each fact (`written.record`, a transaction of its own), then writes the objects,
    and deletes those rows in the inbox's transaction: a row still there when a fact comes
    again names an object of an attempt that did not commit, and if that object exists the
    fact is in it and is not written again; if not (the attempt died before its write), the
    fact is written now. The same batch again names the same objects, which are there.
    Without a session (tools, tests) only the last holds. What is left: a put that failed for
    the writer yet reached S3 after the next attempt found nothing; each line carries its
    `fact_id`, so `count(DISTINCT fact_id)` would still count it once.
    """

    def __init__(self, store: ObjectStore, table: str = "order_facts") -> None:
        self._store = store
        self._table = table

    async def append(self, fact_id: str, occurred_at: datetime, fact: dict[str, Any]) -> bool:
        """Write the fact in an object of its own day, unless it was written."""
        return await self.append_many([(fact_id, occurred_at, fact)]) == 1

    async def append_many(self, facts: Sequence[Fact], session: AsyncSession | None = None) -> int:
        """One object per day of the facts not written yet; how many facts were added."""
        unique = {fact_id: (occurred_at, fact) for fact_id, occurred_at, fact in facts}
        engine = written.engine_of(session) if session is not None else None
        if engine is not None:
            for fact_id in await self._already_written(engine, unique):
                del unique[fact_id]
        by_day: dict[str, dict[str, bytes]] = {}
        for fact_id, (occurred_at, fact) in unique.items():
            line = canonical_json({"fact_id": fact_id, **fact}) + b"\n"
            by_day.setdefault(partition_of(occurred_at), {})[fact_id] = line
        objects = [self._object(day, lines) for day, lines in sorted(by_day.items())]
        if engine is not None:
            await written.record(engine, {f: key for key, ids, _ in objects for f in ids})
        added = 0
        for key, ids, body in objects:
            result = await self._store.put_if_absent(key, body, content_type=JSON_LINES)
            added += len(ids) if result.created else 0
        if session is not None:
            await written.forget(session, [fact_id for fact_id, _, _ in facts])
        return added

    async def _already_written(self, engine: AsyncEngine, facts: Collection[str]) -> set[str]:
        """The facts an attempt that did not commit wrote into an object that exists."""
        earlier = await written.earlier(engine, facts)
        present = {key for key in set(earlier.values()) if await self._store.get(key) is not None}
        return {fact_id for fact_id, key in earlier.items() if key in present}

    def _object(self, day: str, lines: dict[str, bytes]) -> tuple[str, list[str], bytes]:
        """The key, fact ids and body of one day's object."""
        ids = sorted(lines)
        name = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]
        body = b"".join(lines[fact_id] for fact_id in ids)
        return f"{self._table}/dt={day}/{name}.jsonl", ids, body


JSON_LINES = "application/x-ndjson"


def partition_of(occurred_at: datetime) -> str:
    """The `dt` partition of a fact: the day it happened on, in UTC (naive times are UTC)."""
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    return f"{occurred_at.astimezone(UTC):%Y-%m-%d}"


async def read_facts(
    store: ObjectStore, table: str = "order_facts"
) -> dict[str, list[dict[str, Any]]]:
    """Every fact by its `dt` partition, read back by the layout, each fact id once (for tests
    and operators; Athena reads the same objects)."""
    by_day: dict[str, dict[str, dict[str, Any]]] = {}
    for key in await store.keys(f"{table}/dt="):
        _, partition, name = key.split("/")
        body = await store.get(key)
        if body is None or not name.endswith(".jsonl"):
            continue
        day = by_day.setdefault(partition.removeprefix("dt="), {})
        for raw in body.splitlines():
            fact = json.loads(raw)
            day.setdefault(str(fact["fact_id"]), fact)
    return {day: list(facts.values()) for day, facts in sorted(by_day.items())}
