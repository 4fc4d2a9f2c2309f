"""Time-ordered identifiers (UUIDv7), so keys sort by creation and partition cleanly."""

from __future__ import annotations

import uuid

from uuid_utils import compat


def new_id() -> uuid.UUID:
    """A new UUIDv7."""
    return compat.uuid7()
