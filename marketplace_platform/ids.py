"""Identifiers: new ones time-ordered (UUIDv7), so keys sort by creation and partition cleanly;
derived ones name-based (UUIDv8 from SHA-256), so every Region names one thing alike.

A derived id is the same wherever and however often it is computed from the same parts: a
client's retry in another Region (whose database may never have received the first request's
rows) names the same record as the first request, and every idempotency key built from it
(the PSP's, the saga's, inventory's) matches the first request's. It carries no time: whatever
lists derived ids in creation order sorts by a creation time of its own, not by the id.
"""

from __future__ import annotations

import hashlib
import uuid

from uuid_utils import compat

_VERSION_8 = 0x8 << 76  # bits 48-51 of the 128: the version
_VARIANT_RFC = 0b10 << 62  # bits 64-65: the RFC 9562 variant
_VERSION_AND_VARIANT_BITS = (0xF << 76) | (0b11 << 62)


def new_id() -> uuid.UUID:
    """A new UUIDv7."""
    return compat.uuid7()


def derived_id(namespace: uuid.UUID, *parts: str) -> uuid.UUID:
    """The UUIDv8 (RFC 9562, name-based with SHA-256) of `parts` under `namespace`.

    Each part is length-prefixed, so no two different lists of parts hash the same bytes
    (("ab", "c") and ("a", "bc") differ)."""
    digest = hashlib.sha256(namespace.bytes)
    for part in parts:
        encoded = part.encode()
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    value = int.from_bytes(digest.digest()[:16], "big")
    return uuid.UUID(int=(value & ~_VERSION_AND_VARIANT_BITS) | _VERSION_8 | _VARIANT_RFC)
