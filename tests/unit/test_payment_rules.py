"""Payment amount and state rules, and the PSP circuit breaker, with no I/O."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from marketplace_platform.errors import InvalidArgument
from services.payment.adapters import psp as psp_adapter
from services.payment.adapters.psp import CircuitBreaker
from services.payment.domain import payment as rules
from services.payment.domain.payment import (
    AmountExceeded,
    Operation,
    OperationKind,
    OperationState,
    Payment,
    PaymentStateConflict,
    PaymentStatus,
)
from services.payment.service_layer import ports


def payment(
    status: PaymentStatus, *, authorized: int = 1000, captured: int = 0, refunded: int = 0
) -> Payment:
    return Payment(
        uuid.uuid4(),
        uuid.uuid4(),
        "c-1",
        "USD",
        "pm_card_visa",
        1000,
        status,
        authorized=authorized,
        captured=captured,
        refunded=refunded,
    )


def operation(kind: OperationKind, amount: int) -> Operation:
    return Operation(uuid.uuid4(), uuid.uuid4(), kind, amount, OperationState.PENDING, "key-1")


def test_capture_is_limited_to_the_authorization() -> None:
    rules.check_operation(payment(PaymentStatus.AUTHORIZED), OperationKind.CAPTURE, 1000, "USD")
    with pytest.raises(AmountExceeded):
        rules.check_operation(payment(PaymentStatus.AUTHORIZED), OperationKind.CAPTURE, 1001, "USD")


def test_refunds_are_limited_to_what_was_captured_and_not_yet_refunded() -> None:
    captured = payment(PaymentStatus.PARTIALLY_REFUNDED, captured=800, refunded=500)
    rules.check_operation(captured, OperationKind.REFUND, 300, "USD")
    with pytest.raises(AmountExceeded):
        rules.check_operation(captured, OperationKind.REFUND, 301, "USD")


def test_void_only_before_capture() -> None:
    rules.check_operation(payment(PaymentStatus.AUTHORIZED), OperationKind.VOID, 0, "")
    with pytest.raises(PaymentStateConflict):
        rules.check_operation(
            payment(PaymentStatus.CAPTURED, captured=1000), OperationKind.VOID, 0, ""
        )


def test_only_a_failed_or_voided_payment_holds_nothing_to_void() -> None:
    empty = {status for status in PaymentStatus if rules.holds_nothing(payment(status))}
    assert empty == {PaymentStatus.FAILED, PaymentStatus.VOIDED}


def test_another_currency_is_refused() -> None:
    with pytest.raises(InvalidArgument):
        rules.check_operation(payment(PaymentStatus.AUTHORIZED), OperationKind.CAPTURE, 10, "EUR")
    with pytest.raises(InvalidArgument):
        rules.check_currency("XYZ")


def test_refunds_add_up_to_refunded() -> None:
    captured = payment(PaymentStatus.CAPTURED, captured=1000)
    partly = rules.after_success(captured, operation(OperationKind.REFUND, 400))
    fully = rules.after_success(partly, operation(OperationKind.REFUND, 600))
    assert (partly.status, fully.status, fully.refunded) == (
        PaymentStatus.PARTIALLY_REFUNDED,
        PaymentStatus.REFUNDED,
        1000,
    )


def test_an_orders_one_authorization_capture_and_void_are_keyed_by_the_order() -> None:
    order_id = uuid.uuid4()
    keys = {
        kind: operation(kind, 10).psp_idempotency_key(order_id)
        for kind in (OperationKind.AUTHORIZE, OperationKind.CAPTURE, OperationKind.VOID)
    }
    assert keys == {
        OperationKind.AUTHORIZE: f"authorize-{order_id}",
        OperationKind.CAPTURE: f"capture-{order_id}",
        OperationKind.VOID: f"void-{order_id}",
    }
    # Another ledger's operation (another Region's) of the same order: the same key.
    assert (
        operation(OperationKind.CAPTURE, 10).psp_idempotency_key(order_id)
        == keys[OperationKind.CAPTURE]
    )


def test_refunds_several_per_order_are_keyed_by_the_operation() -> None:
    order_id = uuid.uuid4()
    first, second = operation(OperationKind.REFUND, 10), operation(OperationKind.REFUND, 10)
    assert first.psp_idempotency_key(order_id) == f"refund-{first.operation_id}"
    assert first.psp_idempotency_key(order_id) != second.psp_idempotency_key(order_id)


def test_the_breaker_opens_after_consecutive_failures_and_a_success_closes_it() -> None:
    breaker = CircuitBreaker(failures_to_open=2, open_seconds=60)
    breaker.record(healthy=False)
    assert breaker.allow()
    breaker.record(healthy=False)
    assert not breaker.allow()
    breaker.record(healthy=True)
    assert breaker.allow()


def test_an_open_breaker_lets_one_trial_through_after_its_pause() -> None:
    breaker = CircuitBreaker(failures_to_open=1, open_seconds=0)
    breaker.record(healthy=False)
    assert breaker.allow()  # the pause (0 s) is over: one trial call


def test_a_release_voids_before_capture_refunds_after_and_skips_what_holds_nothing() -> None:
    assert rules.release_operation(payment(PaymentStatus.AUTHORIZED)) == (OperationKind.VOID, 1000)
    partly = payment(PaymentStatus.PARTIALLY_REFUNDED, captured=800, refunded=300)
    assert rules.release_operation(partly) == (OperationKind.REFUND, 500)
    for status in (PaymentStatus.FAILED, PaymentStatus.VOIDED, PaymentStatus.PENDING):
        assert rules.release_operation(payment(status)) is None
    refunded = payment(PaymentStatus.REFUNDED, captured=800, refunded=800)
    assert (rules.held(refunded), rules.release_operation(refunded)) == (0, None)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("3", 3.0), ("0.5", 0.5), ("-2", 0.0), ("soon", None)],
)
def test_retry_after_is_read_in_seconds(header: str | None, seconds: float | None) -> None:
    headers = {"Retry-After": header} if header is not None else {}
    assert psp_adapter._retry_after(httpx.Response(429, headers=headers)) == seconds


def test_retry_after_may_be_an_http_date() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    waited = psp_adapter._retry_after(httpx.Response(429, headers={"Retry-After": when}))
    assert waited is not None
    assert 25 <= waited <= 30


def intent(status: str, decline_code: str | None = None) -> ports.Intent:
    return ports.Intent("pi_1", status, 1000, "USD", 0, 0, 0, decline_code=decline_code)


@pytest.mark.parametrize(
    ("status", "decline_code", "outcome", "code"),
    [
        ("requires_capture", None, ports.Approved, None),
        ("succeeded", None, ports.Approved, None),
        ("requires_payment_method", "generic_decline", ports.Declined, "generic_decline"),
        ("requires_payment_method", None, ports.Declined, "card_declined"),
        ("canceled", None, ports.Declined, "canceled"),
        ("requires_action", None, ports.Declined, "authentication_required"),
        ("requires_confirmation", None, ports.Declined, "not_confirmed"),
        ("processing", None, ports.Unknown, None),
        ("something_new", None, ports.Unknown, None),
    ],
)
def test_every_intent_status_says_what_became_of_the_authorization(
    status: str, decline_code: str | None, outcome: type, code: str | None
) -> None:
    found = ports.authorization_outcome(intent(status, decline_code))
    assert isinstance(found, outcome)
    if code is not None:
        assert isinstance(found, ports.Declined)
        assert (found.code, found.intent_id) == (code, "pi_1")


def test_only_a_failure_that_was_never_applied_is_tried_again() -> None:
    never = replace(
        operation(OperationKind.CAPTURE, 10),
        state=OperationState.FAILED,
        failure_code="not_applied",
    )
    refused = replace(never, failure_code="payment_intent_unexpected_state")
    assert (rules.may_try_again(never), rules.may_try_again(refused)) == (True, False)
    assert (rules.awaits_outcome(never), rules.awaits_outcome(refused)) == (True, False)
    assert rules.awaits_outcome(operation(OperationKind.CAPTURE, 10))  # PENDING


def test_trying_an_authorization_again_makes_its_payment_pending_again() -> None:
    failed = replace(payment(PaymentStatus.FAILED, authorized=0), failure_code="not_applied")
    again = rules.reopened(failed, operation(OperationKind.AUTHORIZE, 1000))
    assert (again.status, again.failure_code) == (PaymentStatus.PENDING, None)
    authorized = payment(PaymentStatus.AUTHORIZED)
    assert rules.reopened(authorized, operation(OperationKind.CAPTURE, 10)) == authorized
