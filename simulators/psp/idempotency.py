"""Idempotency keys: the first response under a key is stored with the state it describes,
and every later request with that key gets it back (or a refusal if its parameters differ)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simulators.psp.errors import IdempotencyMismatch, InvalidRequest, PspError
from simulators.psp.ledger import Ledger, StoredResponse

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Reply:
    """What to answer: status, JSON text, and whether it is a replay of a stored response."""

    status: int
    body: str
    replayed: bool = False


def fingerprint(method: str, path: str, params: Mapping[str, Any]) -> str:
    """A digest of the request, blind to key order and whitespace in its JSON body."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def check_key(key: str | None) -> str | None:
    """The Idempotency-Key header's value, or None when absent or empty."""
    if not key:
        return None
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRequest(
            f"Idempotency-Key is longer than {MAX_KEY_LENGTH} characters",
            param="Idempotency-Key",
        )
    return key


def run_once(
    ledger: Ledger,
    operation: Callable[[], dict[str, Any]],
    *,
    key: str | None,
    request_fingerprint: str,
    now: int,
) -> Reply:
    """Apply `operation` and store its answer under `key` in one transaction, or replay.

    The whole call is synchronous, so on the event loop it cannot interleave with another
    request: two requests racing on one key are serialized here, and only the first applies.
    """
    with ledger.transaction():
        stored = ledger.stored_response(key) if key else None
        if stored is not None:
            if stored.fingerprint != request_fingerprint:
                raise IdempotencyMismatch(
                    f"Keys for idempotent requests can only be used with the same parameters "
                    f"they were first used with; '{key}' was used with other parameters."
                )
            return Reply(stored.status, stored.body, replayed=True)
        try:
            status, body = 200, operation()
        except PspError as refusal:
            status, body = refusal.status, refusal.body()
        text = json.dumps(body)
        if key:
            ledger.store_response(key, StoredResponse(request_fingerprint, status, text), now=now)
    return Reply(status, text)
