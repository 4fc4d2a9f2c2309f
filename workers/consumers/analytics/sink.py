"""Fact sinks: a local JSON-lines file, or one object per fact in the object store (S3).

Both are idempotent by fact id (the event id): the file adapter reads what other writers
appended since its last look, under an exclusive file lock, before it appends; the object
store adapter writes each fact under a key made of its id, once. `append_many` adds a batch's
facts at once: the file adapter with one lock, one write and one fsync for all of them.
"""

from __future__ import annotations

import abc
import asyncio
import fcntl
import json
import os
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from marketplace_platform.object_store import ObjectStore
from workers.consumers.documents import canonical_json

# One fact to add: its id (the event id), when it happened, and the fact itself.
Fact = tuple[str, datetime, dict[str, Any]]


class FactSink(abc.ABC):
    """Where order facts go."""

    @abc.abstractmethod
    async def append(self, fact_id: str, occurred_at: datetime, fact: dict[str, Any]) -> bool:
        """Add the fact unless a fact with this id is there; True if it was added."""

    async def append_many(self, facts: Sequence[Fact]) -> int:
        """Add each fact whose id is not there yet; how many were added (one `append` each)."""
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

    async def append_many(self, facts: Sequence[Fact]) -> int:
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


class ObjectStoreFactSink(FactSink):
    """One JSON object per fact, partitioned by day: `<prefix>/date=YYYY-MM-DD/<fact_id>.json`."""

    def __init__(self, store: ObjectStore, prefix: str = "order-facts") -> None:
        self._store = store
        self._prefix = prefix

    async def append(self, fact_id: str, occurred_at: datetime, fact: dict[str, Any]) -> bool:
        """Write the fact's object unless it exists."""
        key = f"{self._prefix}/date={occurred_at:%Y-%m-%d}/{fact_id}.json"
        body = canonical_json({"fact_id": fact_id, **fact})
        result = await self._store.put_if_absent(key, body, content_type="application/json")
        return result.created
