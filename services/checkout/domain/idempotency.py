"""PlaceOrder's idempotency records: what a second request with the same key gets.

Phase 1 claims the key (STARTED, with a lease); phase 2 stores the response (COMPLETED) in
the same transaction as the order. A repeat replays the response, a different request under
the key is refused, and a request that finds a live lease is told the first is in flight.

The order a request places is named by the request, not drawn at random: its id is derived from
what identifies the purchase, (customer, idempotency key, cart). A client that retries in
another Region, whose database (an asynchronous replica) may never have received the first
request's order or key, names the same order again, so the saga, inventory and the PSP (whose
keys derive from the order id) find the first request's reservation and authorization instead
of making second ones.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from marketplace_platform.errors import IdempotencyKeyReused, RequestInFlight
from marketplace_platform.ids import derived_id

# The namespace of order ids (fixed forever: changing it renames every future order, and a
# retry across a deploy that changed it would place a second order).
ORDER_ID_NAMESPACE = uuid.UUID("5b0c1f6e-4a38-4f0e-9d7a-6c2f0b1e8d41")


class RecordState(StrEnum):
    """Where a keyed request is."""

    STARTED = "STARTED"
    COMPLETED = "COMPLETED"


@dataclass(frozen=True)
class PlacedOrder:
    """PlaceOrder's stored answer."""

    order_id: uuid.UUID
    status: str


@dataclass(frozen=True)
class IdempotencyRecord:
    """One (customer, key) and what became of its request."""

    customer_id: str
    key: str
    fingerprint: str
    state: RecordState
    locked_until: datetime
    response: PlacedOrder | None = None


def order_id_for(*, customer_id: str, idempotency_key: str, cart_id: uuid.UUID) -> uuid.UUID:
    """The id of the order a PlaceOrder names: the same for the same purchase, in any Region."""
    return derived_id(ORDER_ID_NAMESPACE, customer_id, idempotency_key, str(cart_id))


def fingerprint(request: Mapping[str, Any]) -> str:
    """A stable digest of a request's meaningful fields."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def resume(
    record: IdempotencyRecord, request_fingerprint: str, now: datetime
) -> PlacedOrder | None:
    """The stored answer to replay, or None when this request may (re)take the key.

    Raises IdempotencyKeyReused for a different request under the key, RequestInFlight while
    the first request still holds its lease.
    """
    if record.fingerprint != request_fingerprint:
        raise IdempotencyKeyReused(
            "this idempotency key was used with a different request",
            metadata={"idempotency_key": record.key},
        )
    if record.state is RecordState.COMPLETED:
        assert record.response is not None
        return record.response
    if record.locked_until > now:
        raise RequestInFlight(
            "a request with this idempotency key is still being processed",
            metadata={"idempotency_key": record.key},
        )
    return None
