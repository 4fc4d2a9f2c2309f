"""One mapper from every failure the gateway meets to RFC 9457 problem details.

Domain errors come back from the services through gRPC statuses (`from_rpc_error`); the
gateway's own refusals (auth, bad input, throttling, shedding) are ApiProblems. The response
never carries a stack trace or an upstream's internal message for 5xx.

A FAILED_PRECONDITION that is not about an idempotency key is 409: the request was valid, the
resource's current state refuses it (a checked-out cart, a shipped order, an empty cart).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import grpc
import orjson
from starlette.responses import Response

from marketplace_platform import errors
from marketplace_platform.grpc_errors import from_rpc_error

PROBLEM_MEDIA_TYPE = "application/problem+json"
UPSTREAM_RETRY_AFTER_SECONDS = 1

# Proto field paths renamed to what the HTTP client sent: the header, or the path parameter.
_WIRE_FIELD_NAMES = {"idempotency_key": "Idempotency-Key"}


@dataclass(frozen=True)
class FieldProblem:
    """One broken field rule, named as the client sent the field."""

    field: str
    message: str


@dataclass(frozen=True)
class Problem:
    """A problem details document (RFC 9457) and the headers that go with it."""

    status: int
    slug: str
    title: str
    detail: str
    errors: tuple[FieldProblem, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, object]:
        """The JSON document."""
        document: dict[str, object] = {
            "type": f"/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            document["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        return document


class ApiProblem(Exception):
    """Raised by the gateway itself to answer with a problem."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


def problem_response(problem: Problem) -> Response:
    """The HTTP response of a problem."""
    return Response(
        orjson.dumps(problem.body()),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(problem.headers),
    )


def bad_request(detail: str, field_problems: Sequence[FieldProblem] = ()) -> Problem:
    """400: the request itself is wrong."""
    return Problem(400, "invalid-request", "Invalid request", detail, tuple(field_problems))


def unauthenticated(detail: str) -> Problem:
    """401 with the challenge RFC 6750 asks for."""
    return Problem(
        401, "unauthenticated", "Unauthenticated", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str) -> Problem:
    """403: authenticated, not allowed."""
    return Problem(403, "forbidden", "Forbidden", detail)


def too_many_requests(retry_after_seconds: float, detail: str) -> Problem:
    """429 with Retry-After in whole seconds (at least 1)."""
    return Problem(
        429,
        "too-many-requests",
        "Too many requests",
        detail,
        headers={"Retry-After": str(retry_after(retry_after_seconds))},
    )


def overloaded(detail: str, retry_after_seconds: float = UPSTREAM_RETRY_AFTER_SECONDS) -> Problem:
    """503 with Retry-After: try again shortly."""
    return Problem(
        503,
        "service-unavailable",
        "Service unavailable",
        detail,
        headers={"Retry-After": str(retry_after(retry_after_seconds))},
    )


def internal_error(request_id: str) -> Problem:
    """500 without any trace; the request id finds the logged one."""
    return Problem(
        500, "internal-error", "Internal error", f"unexpected error; request id {request_id}"
    )


def retry_after(seconds: float) -> int:
    """Whole seconds for a Retry-After header, rounded up, at least 1."""
    return max(1, math.ceil(seconds))


def from_grpc(error: grpc.aio.AioRpcError) -> Problem:
    """The problem for a failed upstream call: its domain error if it carries one, else its code."""
    domain_error = from_rpc_error(error)
    if domain_error is not None:
        return from_domain_error(domain_error, error.code())
    return _from_code(error.code(), error.details() or "")


def from_domain_error(error: errors.DomainError, code: grpc.StatusCode) -> Problem:
    """The problem for a domain error a service raised (`code` is the status it came with)."""
    message = error.message
    if isinstance(error, errors.InvalidArgument) or code is grpc.StatusCode.INVALID_ARGUMENT:
        violations = getattr(error, "violations", ())
        field_problems = tuple(
            FieldProblem(wire_field_name(v.field), v.description) for v in violations
        )
        return bad_request(message, field_problems)
    if isinstance(error, errors.IdempotencyKeyReused) or (
        code is grpc.StatusCode.FAILED_PRECONDITION and "IDEMPOTENCY" in error.reason
    ):
        return Problem(422, "idempotency-key-reused", "Idempotency key reused", message)
    if isinstance(error, errors.RequestInFlight):
        return Problem(409, "request-in-flight", "Request in flight", message)
    if isinstance(error, errors.VersionConflict):
        return Problem(409, "version-conflict", "Version conflict", message)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return Problem(409, _slug(error.reason), "Conflict with the current state", message)
    return _from_code(code, message)


def _from_code(code: grpc.StatusCode, message: str) -> Problem:
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return bad_request(message)
    if code is grpc.StatusCode.NOT_FOUND:
        return Problem(404, "not-found", "Not found", message)
    if code in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED):
        return Problem(409, "conflict", "Conflict", message)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return Problem(409, "failed-precondition", "Conflict with the current state", message)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return too_many_requests(UPSTREAM_RETRY_AFTER_SECONDS, message)
    if code is grpc.StatusCode.UNAVAILABLE:
        return overloaded("an upstream service is unavailable; retry shortly")
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return overloaded("the request ran out of time upstream; retry shortly")
    if code is grpc.StatusCode.UNIMPLEMENTED:
        return Problem(501, "not-implemented", "Not implemented", "this operation is not available")
    # INTERNAL, UNKNOWN, DATA_LOSS, our own credentials refused...: the upstream failed, and
    # what it said stays in its logs (found by the request id), not in the client's response.
    return Problem(
        502, "upstream-error", "Upstream error", f"an upstream call failed ({code.name})"
    )


def wire_field_name(proto_path: str) -> str:
    """`cart_id.value` -> `cart_id`; `idempotency_key` -> `Idempotency-Key`."""
    path = proto_path.removesuffix(".value")
    return _WIRE_FIELD_NAMES.get(path, path)


def _slug(reason: str) -> str:
    return reason.lower().replace("_", "-") or "failed-precondition"
