"""The simulator's durable state in SQLite (WAL): intents, refunds and idempotency keys."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.psp.model import IntentStatus, PaymentIntent, Refund

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payment_intents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    amount_capturable INTEGER NOT NULL,
    amount_received INTEGER NOT NULL,
    amount_refunded INTEGER NOT NULL,
    payment_method TEXT NOT NULL,
    capture_method TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created INTEGER NOT NULL,
    capture_before INTEGER NOT NULL,
    last_payment_error TEXT
);
CREATE TABLE IF NOT EXISTS intent_metadata (
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    intent_seq INTEGER NOT NULL REFERENCES payment_intents (seq),
    PRIMARY KEY (key, value, intent_seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refunds (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    payment_intent TEXT NOT NULL REFERENCES payment_intents (id),
    amount INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created INTEGER NOT NULL
);
"""

_INTENT_COLUMNS = (
    "id, amount, currency, status, amount_capturable, amount_received, amount_refunded, "
    "payment_method, capture_method, metadata, created, capture_before, last_payment_error"
)


@dataclass(frozen=True)
class StoredResponse:
    """The first response given under an idempotency key, and the request it answered."""

    fingerprint: str
    status: int
    body: str


class Ledger:
    """Reads and writes the state; callers group writes with `transaction()`."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """Open (creating if needed) the SQLite file at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a commit survives the process being killed (not a power cut).
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA busy_timeout = 5000")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.executescript(_SCHEMA)
        return cls(connection)

    def close(self) -> None:
        """Close the connection (the WAL is checkpointed)."""
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One atomic unit: committed if the block ends normally, rolled back if it raises."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add_intent(self, intent: PaymentIntent) -> None:
        """Insert a new intent with its metadata."""
        cursor = self._db.execute(
            f"INSERT INTO payment_intents ({_INTENT_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            _intent_row(intent),
        )
        self._db.executemany(
            "INSERT INTO intent_metadata (key, value, intent_seq) VALUES (?, ?, ?)",
            [(key, value, cursor.lastrowid) for key, value in intent.metadata.items()],
        )

    def save_intent(self, intent: PaymentIntent) -> None:
        """Write an existing intent's status and amounts."""
        self._db.execute(
            "UPDATE payment_intents SET status = ?, amount_capturable = ?, amount_received = ?, "
            "amount_refunded = ? WHERE id = ?",
            (
                intent.status.value,
                intent.amount_capturable,
                intent.amount_received,
                intent.amount_refunded,
                intent.id,
            ),
        )

    def intent(self, intent_id: str) -> PaymentIntent | None:
        """The intent with this id, if there is one."""
        row = self._db.execute(
            f"SELECT {_INTENT_COLUMNS} FROM payment_intents WHERE id = ?", (intent_id,)
        ).fetchone()
        return None if row is None else _intent_from_row(row)

    def intent_seq(self, intent_id: str) -> int | None:
        """The creation position of the intent with this id, if there is one."""
        row = self._db.execute(
            "SELECT seq FROM payment_intents WHERE id = ?", (intent_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def intents(
        self, *, metadata: Mapping[str, str], after_seq: int, limit: int
    ) -> list[PaymentIntent]:
        """Up to `limit` intents created after `after_seq` whose metadata has these values."""
        sql = f"SELECT {_INTENT_COLUMNS} FROM payment_intents p WHERE p.seq > ?"
        args: list[Any] = [after_seq]
        for key, value in metadata.items():
            sql += (
                " AND EXISTS (SELECT 1 FROM intent_metadata m"
                " WHERE m.key = ? AND m.value = ? AND m.intent_seq = p.seq)"
            )
            args += [key, value]
        sql += " ORDER BY p.seq LIMIT ?"
        args.append(limit)
        return [_intent_from_row(row) for row in self._db.execute(sql, args)]

    def add_refund(self, refund: Refund) -> None:
        """Insert a refund."""
        self._db.execute(
            "INSERT INTO refunds (id, payment_intent, amount, currency, status, metadata, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                refund.id,
                refund.payment_intent,
                refund.amount,
                refund.currency,
                refund.status,
                json.dumps(dict(refund.metadata)),
                refund.created,
            ),
        )

    def stored_response(self, key: str) -> StoredResponse | None:
        """The response first given under this idempotency key, if any."""
        row = self._db.execute(
            "SELECT fingerprint, status, body FROM idempotency_keys WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else StoredResponse(str(row[0]), int(row[1]), str(row[2]))

    def store_response(self, key: str, response: StoredResponse, *, now: int) -> None:
        """Keep the response given under this idempotency key."""
        self._db.execute(
            "INSERT INTO idempotency_keys (key, fingerprint, status, body, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, response.fingerprint, response.status, response.body, now),
        )


def _intent_row(intent: PaymentIntent) -> tuple[Any, ...]:
    error = None if intent.last_payment_error is None else json.dumps(intent.last_payment_error)
    return (
        intent.id,
        intent.amount,
        intent.currency,
        intent.status.value,
        intent.amount_capturable,
        intent.amount_received,
        intent.amount_refunded,
        intent.payment_method,
        intent.capture_method,
        json.dumps(dict(intent.metadata)),
        intent.created,
        intent.capture_before,
        error,
    )


def _intent_from_row(row: tuple[Any, ...]) -> PaymentIntent:
    return PaymentIntent(
        id=row[0],
        amount=row[1],
        currency=row[2],
        status=IntentStatus(row[3]),
        amount_capturable=row[4],
        amount_received=row[5],
        amount_refunded=row[6],
        payment_method=row[7],
        capture_method=row[8],
        metadata=json.loads(row[9]),
        created=row[10],
        capture_before=row[11],
        last_payment_error=None if row[12] is None else json.loads(row[12]),
    )
