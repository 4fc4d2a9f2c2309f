"""Translate domain errors to gRPC statuses with rich details, and back again on the client.

Server side: `to_status`. Client side, once for every caller (services, saga tasks, consumers):
`from_rpc_error` rebuilds the server's domain error, `refusal_reason` reads its reason,
`is_transient` says whether trying again may help, `describe` makes one log line of a failure,
and `translated` awaits a call and raises the domain error or DependencyUnavailable.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from marketplace_platform import errors

ERROR_DOMAIN = "marketplace"
T = TypeVar("T")

# Statuses a caller may try again: the server or the network failed, not the request.
# RESOURCE_EXHAUSTED is a quota (transient) unless a service's own reason says otherwise.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

_STATUS_BY_ERROR: dict[type[errors.DomainError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.VersionConflict: grpc.StatusCode.ABORTED,
    errors.IdempotencyKeyReused: grpc.StatusCode.FAILED_PRECONDITION,
    errors.RequestInFlight: grpc.StatusCode.ABORTED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.DependencyUnavailable: grpc.StatusCode.UNAVAILABLE,
}

_ERROR_BY_CODE: dict[grpc.StatusCode, type[errors.DomainError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: errors.InvalidArgument,
    grpc.StatusCode.NOT_FOUND: errors.NotFound,
    grpc.StatusCode.ALREADY_EXISTS: errors.AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: errors.FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: errors.ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: errors.DependencyUnavailable,
}

_KNOWN_ERRORS: tuple[type[errors.DomainError], ...] = (*_STATUS_BY_ERROR, errors.DomainError)
_ERROR_BY_REASON = {cls.reason: cls for cls in _KNOWN_ERRORS}


def status_code_for(error: errors.DomainError) -> grpc.StatusCode:
    """The gRPC status code of a domain error (its nearest mapped base class)."""
    for cls in type(error).__mro__:
        if cls in _STATUS_BY_ERROR:
            return _STATUS_BY_ERROR[cls]
    return grpc.StatusCode.UNKNOWN


def to_status(error: errors.DomainError) -> grpc.Status:
    """A grpc.Status carrying google.rpc ErrorInfo (reason) and BadRequest (field violations)."""
    code = status_code_for(error)
    info = error_details_pb2.ErrorInfo(
        reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata
    )
    details = [_pack(info)]
    if isinstance(error, errors.InvalidArgument) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description, reason=v.rule
                )
                for v in error.violations
            ]
        )
        details.append(_pack(bad_request))
    status = status_pb2.Status(code=code.value[0], message=error.message, details=details)
    return rpc_status.to_status(status)


def from_rpc_error(error: grpc.RpcError) -> errors.DomainError | None:
    """Rebuild the domain error a server raised, or None when the status carries none
    (a failed call of the blocking or the asyncio API: both have the same accessors)."""
    status = rpc_status.from_call(cast(grpc.Call, error))  # same accessors as a sync call
    if status is None:
        return None
    reason, metadata, violations = "", {}, []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            if info.domain == ERROR_DOMAIN:
                reason, metadata = info.reason, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations = [
                errors.FieldViolation(v.field, v.description, v.reason)
                for v in bad_request.field_violations
            ]
    if not reason:
        return None
    # A service's own reason (e.g. OUT_OF_STOCK) comes back as the error kind of its status
    # code, keeping the reason, so callers can tell refusals apart without importing services.
    code = cast(grpc.Call, error).code()
    cls = _ERROR_BY_REASON.get(reason) or _ERROR_BY_CODE.get(code, errors.DomainError)
    rebuilt = (
        errors.InvalidArgument(status.message, tuple(violations))
        if cls is errors.InvalidArgument
        else cls(status.message, metadata=metadata)
    )
    rebuilt.reason = reason
    return rebuilt


def status_code(error: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed call."""
    return cast(grpc.Call, error).code()


def details(error: grpc.RpcError) -> str:
    """The server's message for a failed call."""
    return cast(grpc.Call, error).details() or ""


def refusal_reason(error: grpc.RpcError) -> tuple[str, dict[str, str]]:
    """The ErrorInfo reason and metadata a service attached to its refusal ('' when none)."""
    refused = from_rpc_error(error)
    if refused is None:
        return "", {}
    return refused.reason, refused.metadata


def is_transient(error: grpc.RpcError) -> bool:
    """Whether trying the call again may succeed: the server or the network failed. A
    RESOURCE_EXHAUSTED with a service's own reason (OUT_OF_STOCK) is a refusal, not a quota."""
    code = status_code(error)
    if code not in TRANSIENT_CODES:
        return False
    if code is not grpc.StatusCode.RESOURCE_EXHAUSTED:
        return True
    reason, _ = refusal_reason(error)
    return reason in ("", "RESOURCE_EXHAUSTED")


def describe(error: grpc.RpcError) -> str:
    """One line about a failed call: its status and the server's message."""
    return f"{status_code(error).name}: {details(error)}"


async def translated(service: str, call: Awaitable[T]) -> T:
    """Await a gRPC call; a refusal becomes the server's domain error, anything else
    (deadline, connection) DependencyUnavailable."""
    try:
        return await call
    except grpc.aio.AioRpcError as error:
        refused = from_rpc_error(error)
        if refused is not None:
            raise refused from error
        raise errors.DependencyUnavailable(
            f"{service} did not answer: {describe(error)}"
        ) from error


def _pack(message: error_details_pb2.ErrorInfo | error_details_pb2.BadRequest) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed
