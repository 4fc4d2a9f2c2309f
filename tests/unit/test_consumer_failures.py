"""How the consumer loop tells a dependency that is unavailable (retry later, receives not
counted) from any other failure (counts toward the DLQ), and how far each kind backs off."""

from __future__ import annotations

import random

import grpc
import pytest
import sqlalchemy.exc
from botocore.exceptions import (  # type: ignore[import-untyped]
    ClientError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from google.protobuf.message import DecodeError
from pydantic import ValidationError

from marketplace_platform import errors
from marketplace_platform.grpc_errors import to_status
from marketplace_platform.queues import MAX_RETRY_DELAY_SECONDS
from workers.consumers.loop import (
    LoopOptions,
    describe,
    is_transient,
    retry_delay,
    unavailable_delay,
)
from workers.consumers.settings import ConsumerSettings


def rpc_error(code: grpc.StatusCode, refusal: errors.DomainError | None = None) -> Exception:
    """The AioRpcError a stub raises, with the server's rich status when it refused."""
    trailing = grpc.aio.Metadata()
    details = f"{code.name} from the test"
    if refusal is not None:
        status = to_status(refusal)
        trailing = grpc.aio.Metadata(*status.trailing_metadata)
        details = status.details
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=details)


class DriverError(Exception):
    """A database driver's error carrying a SQLSTATE, as asyncpg's (and SQLAlchemy's) do."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def wrapped_by_sqlalchemy(sqlstate: str) -> sqlalchemy.exc.DBAPIError:
    """The DBAPIError SQLAlchemy raises `from` the driver's error."""
    driver = DriverError(sqlstate)
    try:
        raise sqlalchemy.exc.DBAPIError("SELECT 1", {}, driver) from driver
    except sqlalchemy.exc.DBAPIError as error:
        return error


class PspDown(errors.DependencyUnavailable):
    """A service's own kind of unavailable dependency."""


class OutOfStock(errors.ResourceExhausted):
    """A business refusal that travels as RESOURCE_EXHAUSTED."""

    reason = "OUT_OF_STOCK"


@pytest.mark.parametrize(
    "error",
    [
        rpc_error(grpc.StatusCode.UNAVAILABLE),
        rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED),
        rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED),
        rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, errors.ResourceExhausted("quota")),
        rpc_error(grpc.StatusCode.UNAVAILABLE, PspDown("psp circuit open")),
        errors.DependencyUnavailable("saga engine unreachable"),
        PspDown("psp down"),
        ConnectionRefusedError(111, "Connection refused"),
        ConnectionResetError(),
        TimeoutError(),
        sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
        wrapped_by_sqlalchemy("08006"),  # connection failure
        wrapped_by_sqlalchemy("53300"),  # too many connections
        wrapped_by_sqlalchemy("57P01"),  # admin shutdown (a restart)
        wrapped_by_sqlalchemy("57P03"),  # cannot connect now (starting up)
        wrapped_by_sqlalchemy("57014"),  # statement timeout
        EndpointConnectionError(endpoint_url="https://s3.amazonaws.com"),
        ReadTimeoutError(endpoint_url="https://email.amazonaws.com"),
        ClientError(
            {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "Put"
        ),
        ClientError(
            {"Error": {"Code": "Throttling"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "Send"
        ),
    ],
    ids=lambda error: describe(error)[:40],
)
def test_a_dependency_that_is_unavailable_is_transient(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        rpc_error(grpc.StatusCode.FAILED_PRECONDITION),
        rpc_error(grpc.StatusCode.FAILED_PRECONDITION, errors.FailedPrecondition("captured")),
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT),
        rpc_error(grpc.StatusCode.NOT_FOUND),
        rpc_error(grpc.StatusCode.INTERNAL),
        rpc_error(grpc.StatusCode.UNKNOWN),
        rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, OutOfStock("no mugs left")),
        errors.FailedPrecondition("order cancelled"),
        ValueError("not an event"),
        DecodeError("truncated message"),
        KeyError("shipment_id"),
        AssertionError(),
        RuntimeError("capture of order o-1 is UNKNOWN"),
        wrapped_by_sqlalchemy("22012"),  # division by zero: a bug
        wrapped_by_sqlalchemy("23505"),  # unique violation
        wrapped_by_sqlalchemy("42601"),  # syntax error
        sqlalchemy.exc.DBAPIError("SELECT 1", {}, Exception("bad"), connection_invalidated=False),
        ClientError(
            {"Error": {"Code": "AccessDenied"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "Put"
        ),
        FileNotFoundError("documents/"),
    ],
    ids=lambda error: describe(error)[:40],
)
def test_anything_else_counts_toward_the_dead_letter_queue(error: Exception) -> None:
    assert not is_transient(error)


def test_an_error_raised_from_an_unavailable_dependency_is_transient() -> None:
    with pytest.raises(RuntimeError) as caught:
        raise RuntimeError("capture failed") from rpc_error(grpc.StatusCode.UNAVAILABLE)
    assert is_transient(caught.value)


def test_an_error_raised_while_handling_an_unavailable_one_is_not() -> None:
    # Implicit context only: the handler caught UNAVAILABLE and then failed on its own.
    def fallback() -> None:
        try:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE)
        except grpc.aio.AioRpcError:
            raise KeyError("bug in the fallback")  # noqa: B904 - the point of the test

    with pytest.raises(KeyError) as caught:
        fallback()
    assert caught.value.__context__ is not None
    assert not is_transient(caught.value)


class Ceiling(random.Random):
    """Full jitter's worst case: always the top of the range, so the ceiling shows."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_the_unavailable_backoff_doubles_to_minutes_then_stays_capped() -> None:
    options = LoopOptions(unavailable_base_seconds=1.0, unavailable_max_seconds=300.0)
    ceilings = [unavailable_delay(attempt, options, Ceiling()) for attempt in range(1, 13)]
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]


def test_the_unavailable_backoff_survives_an_outage_of_days() -> None:
    options = LoopOptions(unavailable_max_seconds=300.0)
    assert unavailable_delay(10**6, options, Ceiling()) == 300
    assert unavailable_delay(0, options, Ceiling()) == 1  # as if the first attempt


def test_the_unavailable_backoff_never_exceeds_what_sqs_can_delay() -> None:
    options = LoopOptions(unavailable_base_seconds=60.0, unavailable_max_seconds=3600.0)
    assert unavailable_delay(20, options, Ceiling()) == MAX_RETRY_DELAY_SECONDS


def test_the_unavailable_backoff_is_full_jitter_under_its_ceiling() -> None:
    options = LoopOptions(unavailable_base_seconds=1.0, unavailable_max_seconds=300.0)
    rng = random.Random(7)
    delays = [unavailable_delay(12, options, rng) for _ in range(2000)]
    assert min(delays) >= 0
    assert max(delays) <= 300
    # Spread over the whole range, not bunched at the top: retries of one outage do not align.
    assert min(delays) < 30
    assert max(delays) > 270


def test_the_two_backoffs_are_separate() -> None:
    options = LoopOptions(
        retry_base_seconds=1.0,
        retry_max_seconds=10.0,
        unavailable_base_seconds=5.0,
        unavailable_max_seconds=600.0,
    )
    assert retry_delay(8, options, Ceiling()) == 10
    assert unavailable_delay(8, options, Ceiling()) == 600
    assert unavailable_delay(1, options, Ceiling()) == 5


def test_the_unavailable_backoff_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSUMER_UNAVAILABLE_BASE_SECONDS", raising=False)
    monkeypatch.delenv("CONSUMER_UNAVAILABLE_MAX_SECONDS", raising=False)
    defaults = ConsumerSettings()
    assert defaults.consumer_unavailable_base_seconds == 1.0
    assert defaults.consumer_unavailable_max_seconds == 300.0
    monkeypatch.setenv("CONSUMER_UNAVAILABLE_BASE_SECONDS", "0.5")
    monkeypatch.setenv("CONSUMER_UNAVAILABLE_MAX_SECONDS", "900")
    settings = ConsumerSettings()
    assert settings.consumer_unavailable_base_seconds == 0.5
    assert settings.consumer_unavailable_max_seconds == 900.0


def test_an_unavailable_backoff_longer_than_sqs_can_delay_is_refused() -> None:
    with pytest.raises(ValidationError, match="consumer_unavailable_max_seconds"):
        ConsumerSettings(consumer_unavailable_max_seconds=901)
