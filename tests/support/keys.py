"""Fresh identifiers for tests: every call a new one, so no test meets another's rows."""

from __future__ import annotations

import uuid


def unique(prefix: str = "", length: int = 12) -> str:
    """`prefix` and `length` hex digits no other call returns."""
    return f"{prefix}{uuid.uuid4().hex[:length]}"


def idempotency_key() -> str:
    """A new idempotency key."""
    return unique("key-", 32)


def customer_id() -> str:
    """A customer no other test has."""
    return unique("customer-", 10)
