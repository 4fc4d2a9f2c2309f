"""Domain errors and gRPC statuses -> problem details, through the real status encoding."""

from __future__ import annotations

import grpc
import orjson
import pytest

from gateway.problems import from_grpc, internal_error, problem_response, retry_after
from marketplace_platform import errors
from marketplace_platform.grpc_errors import to_status


def rpc_error(error: errors.DomainError) -> grpc.aio.AioRpcError:
    """The error a client sees when a service raised `error` (as the boundary encodes it)."""
    status = to_status(error)
    return grpc.aio.AioRpcError(
        status.code,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(*status.trailing_metadata),
        details=status.details,
    )


def bare(code: grpc.StatusCode, details: str = "") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


class CartCheckedOut(errors.FailedPrecondition):
    reason = "CART_CHECKED_OUT"


class KeyMismatch(errors.FailedPrecondition):
    reason = "IDEMPOTENCY_KEY_MISMATCH"


def test_invalid_argument_is_400_naming_fields_as_the_client_sent_them() -> None:
    violations = (
        errors.FieldViolation("cart_id.value", "value must be a valid UUID", "string.uuid"),
        errors.FieldViolation("idempotency_key", "value length must be at least 8", "min_len"),
        errors.FieldViolation("shipping_address.country", "does not match", "pattern"),
    )
    problem = from_grpc(rpc_error(errors.InvalidArgument("invalid PlaceOrderRequest", violations)))
    assert problem.status == 400
    assert problem.body()["errors"] == [
        {"field": "cart_id", "message": "value must be a valid UUID"},
        {"field": "Idempotency-Key", "message": "value length must be at least 8"},
        {"field": "shipping_address.country", "message": "does not match"},
    ]


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (errors.NotFound("no cart"), 404, "not-found"),
        (errors.IdempotencyKeyReused("other request"), 422, "idempotency-key-reused"),
        (KeyMismatch("other request"), 422, "idempotency-key-reused"),
        (errors.RequestInFlight("first still running"), 409, "request-in-flight"),
        (errors.VersionConflict("stale"), 409, "version-conflict"),
        (CartCheckedOut("cart is checked out"), 409, "cart-checked-out"),
        (errors.AlreadyExists("exists"), 409, "conflict"),
        (errors.ResourceExhausted("quota"), 429, "too-many-requests"),
        (errors.DependencyUnavailable("psp down"), 503, "service-unavailable"),
    ],
)
def test_domain_errors_map_to_their_status(
    error: errors.DomainError, status: int, kind: str
) -> None:
    problem = from_grpc(rpc_error(error))
    assert (problem.status, problem.body()["type"]) == (status, f"/problems/{kind}")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 503),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.INTERNAL, 502),
        (grpc.StatusCode.UNKNOWN, 502),
    ],
)
def test_statuses_without_details_map_by_code(code: grpc.StatusCode, status: int) -> None:
    assert from_grpc(bare(code)).status == status


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED])
def test_unavailable_and_deadline_carry_retry_after(code: grpc.StatusCode) -> None:
    response = problem_response(from_grpc(bare(code)))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.media_type == "application/problem+json"


def test_an_upstream_internal_message_never_reaches_the_client() -> None:
    leaked = 'Traceback (most recent call last):\n  File "secret.py"'
    response = problem_response(from_grpc(bare(grpc.StatusCode.INTERNAL, leaked)))
    assert b"Traceback" not in response.body
    assert b"secret.py" not in response.body


def test_internal_error_names_the_request_and_nothing_else() -> None:
    body = orjson.loads(problem_response(internal_error("req-123")).body)
    assert body == {
        "type": "/problems/internal-error",
        "title": "Internal error",
        "status": 500,
        "detail": "unexpected error; request id req-123",
    }


@pytest.mark.parametrize(("seconds", "header"), [(0.0, 1), (0.2, 1), (1.0, 1), (1.01, 2), (7.5, 8)])
def test_retry_after_is_whole_seconds_rounded_up(seconds: float, header: int) -> None:
    assert retry_after(seconds) == header
