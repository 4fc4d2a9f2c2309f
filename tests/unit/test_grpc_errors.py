"""Domain errors become gRPC statuses with ErrorInfo and BadRequest details."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2, status_pb2

from marketplace_platform import errors
from marketplace_platform.grpc_errors import ERROR_DOMAIN, status_code_for, to_status


class OutOfStock(errors.ResourceExhausted):
    reason = "OUT_OF_STOCK"


def decode(status: grpc.Status) -> status_pb2.Status:
    raw = dict(status.trailing_metadata)["grpc-status-details-bin"]
    assert isinstance(raw, bytes)
    return status_pb2.Status.FromString(raw)


def test_each_error_kind_has_its_status_code() -> None:
    assert status_code_for(errors.NotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert status_code_for(errors.VersionConflict("x")) == grpc.StatusCode.ABORTED
    assert status_code_for(errors.RequestInFlight("x")) == grpc.StatusCode.ABORTED
    assert status_code_for(errors.IdempotencyKeyReused("x")) == grpc.StatusCode.FAILED_PRECONDITION
    assert status_code_for(errors.DependencyUnavailable("x")) == grpc.StatusCode.UNAVAILABLE


def test_a_subclass_maps_like_its_base_and_keeps_its_own_reason() -> None:
    status = to_status(OutOfStock("sku A has 0 left", metadata={"sku": "A"}))
    info = error_details_pb2.ErrorInfo()
    assert decode(status).details[0].Unpack(info)
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (info.reason, info.domain, dict(info.metadata)) == (
        "OUT_OF_STOCK",
        ERROR_DOMAIN,
        {"sku": "A"},
    )


def test_invalid_argument_carries_every_field_violation() -> None:
    error = errors.InvalidArgument(
        "bad request",
        (
            errors.FieldViolation("lines[0].quantity", "must be at least 1", "int32.gte_lte"),
            errors.FieldViolation("ttl", "value is required", "required"),
        ),
    )
    bad_request = error_details_pb2.BadRequest()
    assert decode(to_status(error)).details[1].Unpack(bad_request)
    assert [(v.field, v.reason) for v in bad_request.field_violations] == [
        ("lines[0].quantity", "int32.gte_lte"),
        ("ttl", "required"),
    ]
