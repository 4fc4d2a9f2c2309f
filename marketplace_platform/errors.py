"""Domain errors: plain exceptions with no transport codes; mappers live at the edges."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One broken field rule: the field's path and what is wrong with it."""

    field: str
    description: str
    rule: str = ""


class DomainError(Exception):
    """Base of every error a handler raises on purpose."""

    reason = "DOMAIN_ERROR"

    def __init__(self, message: str, *, metadata: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})


class InvalidArgument(DomainError):
    """The request breaks a field rule; nothing was done."""

    reason = "INVALID_ARGUMENT"

    def __init__(self, message: str, violations: tuple[FieldViolation, ...] = ()) -> None:
        super().__init__(message)
        self.violations = violations


class NotFound(DomainError):
    """The thing asked for does not exist (or is not the caller's to see)."""

    reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    """A thing with that identity already exists."""

    reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The request is valid but the state does not allow it (e.g. release after commit)."""

    reason = "FAILED_PRECONDITION"


class VersionConflict(DomainError):
    """An optimistic-concurrency check failed: the caller's version is stale."""

    reason = "VERSION_CONFLICT"


class IdempotencyKeyReused(DomainError):
    """The idempotency key was used before with a different request."""

    reason = "IDEMPOTENCY_KEY_REUSED"


class RequestInFlight(DomainError):
    """The first request with this idempotency key is still being processed."""

    reason = "REQUEST_IN_FLIGHT"


class ResourceExhausted(DomainError):
    """A limit or quota is used up (including out of stock)."""

    reason = "RESOURCE_EXHAUSTED"


class DependencyUnavailable(DomainError):
    """Something we depend on is down; the caller may retry later."""

    reason = "DEPENDENCY_UNAVAILABLE"
