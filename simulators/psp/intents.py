"""The operations: authorize, capture, cancel, refund, retrieve and list payment intents.

Each runs inside the caller's transaction and either returns the JSON answer or raises a
PspError; a decline creates the failed intent and then raises.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from simulators.psp import params as p
from simulators.psp.errors import CardDeclined, InvalidRequest, ResourceMissing
from simulators.psp.ledger import Ledger
from simulators.psp.model import (
    AUTHORIZATION_VALIDITY_SECONDS,
    TEST_PAYMENT_METHODS,
    IntentStatus,
    PaymentIntent,
    Refund,
)

MAX_PAGE = 100
DEFAULT_PAGE = 10
_CANCELABLE = (IntentStatus.REQUIRES_CAPTURE, IntentStatus.REQUIRES_PAYMENT_METHOD)


def authorize(ledger: Ledger, params: Mapping[str, Any], *, now: int) -> dict[str, Any]:
    """Create a manual-capture intent; the test payment method decides approve or decline."""
    p.reject_unknown(params, ("amount", "currency", "payment_method", "capture_method", "metadata"))
    amount = p.amount(params, "amount", required=True)
    assert amount is not None
    currency = p.currency(params)
    method = p.text(params, "payment_method", required=True)
    assert method is not None
    behaviour = TEST_PAYMENT_METHODS.get(method)
    if behaviour is None:
        raise InvalidRequest(
            f"No such PaymentMethod: '{method}'", code="resource_missing", param="payment_method"
        )
    capture_method = p.text(params, "capture_method", required=False) or "manual"
    if capture_method != "manual":
        raise InvalidRequest(
            "only capture_method 'manual' is simulated",
            code="parameter_invalid_string",
            param="capture_method",
        )
    intent = PaymentIntent(
        id=f"pi_{secrets.token_hex(12)}",
        amount=amount,
        currency=currency,
        status=IntentStatus.REQUIRES_CAPTURE,
        amount_capturable=amount,
        amount_received=0,
        amount_refunded=0,
        payment_method=method,
        capture_method=capture_method,
        metadata=p.string_map(params, "metadata"),
        created=now,
        capture_before=now + AUTHORIZATION_VALIDITY_SECONDS,
    )
    if behaviour.decline_code is None:
        ledger.add_intent(intent)
        return intent.as_json()
    error = {
        "type": "card_error",
        "code": "card_declined",
        "decline_code": behaviour.decline_code,
        "message": behaviour.message,
    }
    failed = replace(
        intent,
        status=IntentStatus.REQUIRES_PAYMENT_METHOD,
        amount_capturable=0,
        last_payment_error=error,
    )
    ledger.add_intent(failed)
    raise CardDeclined(
        behaviour.message, decline_code=behaviour.decline_code, payment_intent=failed.as_json()
    )


def capture(ledger: Ledger, intent_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Capture all of an authorization, or part of it (the rest is released)."""
    p.reject_unknown(params, ("amount_to_capture",))
    intent = _existing(ledger, intent_id)
    if intent.status is not IntentStatus.REQUIRES_CAPTURE:
        raise _unexpected_state(intent, "capture")
    amount = p.amount(params, "amount_to_capture", required=False) or intent.amount_capturable
    if amount > intent.amount_capturable:
        raise InvalidRequest(
            f"amount_to_capture {amount} is more than the {intent.amount_capturable} capturable",
            code="amount_too_large",
            param="amount_to_capture",
        )
    captured = replace(
        intent, status=IntentStatus.SUCCEEDED, amount_received=amount, amount_capturable=0
    )
    ledger.save_intent(captured)
    return captured.as_json()


def cancel(ledger: Ledger, intent_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Void an uncaptured (or failed) intent."""
    p.reject_unknown(params, ("cancellation_reason",))
    p.text(params, "cancellation_reason", required=False)
    intent = _existing(ledger, intent_id)
    if intent.status not in _CANCELABLE:
        raise _unexpected_state(intent, "cancel")
    canceled = replace(intent, status=IntentStatus.CANCELED, amount_capturable=0)
    ledger.save_intent(canceled)
    return canceled.as_json()


def refund(ledger: Ledger, params: Mapping[str, Any], *, now: int) -> dict[str, Any]:
    """Refund what was captured and not yet refunded, or part of it."""
    p.reject_unknown(params, ("payment_intent", "amount", "metadata"))
    intent_id = p.text(params, "payment_intent", required=True)
    assert intent_id is not None
    requested = p.amount(params, "amount", required=False)
    metadata = p.string_map(params, "metadata")
    intent = _existing(ledger, intent_id, param="payment_intent")
    if intent.status is not IntentStatus.SUCCEEDED:
        raise _unexpected_state(intent, "refund")
    refundable = intent.amount_received - intent.amount_refunded
    if requested is None and refundable == 0:
        raise InvalidRequest(
            f"{intent.id} has been refunded in full", code="charge_already_refunded"
        )
    amount = requested or refundable
    if amount > refundable:
        raise InvalidRequest(
            f"refund amount {amount} is more than the {refundable} left to refund",
            code="amount_too_large",
            param="amount",
        )
    given = Refund(
        id=f"re_{secrets.token_hex(12)}",
        amount=amount,
        currency=intent.currency,
        payment_intent=intent.id,
        status="succeeded",
        metadata=metadata,
        created=now,
    )
    ledger.add_refund(given)
    ledger.save_intent(replace(intent, amount_refunded=intent.amount_refunded + amount))
    return given.as_json()


def retrieve(ledger: Ledger, intent_id: str) -> dict[str, Any]:
    """One intent."""
    return _existing(ledger, intent_id).as_json()


def list_page(ledger: Ledger, query: Mapping[str, str]) -> dict[str, Any]:
    """A page of intents in creation order, filtered by `metadata[key]=value` parameters."""
    metadata = {}
    for name, value in query.items():
        if name.startswith("metadata[") and name.endswith("]") and len(name) > len("metadata[]"):
            metadata[name[len("metadata[") : -1]] = value
        elif name not in ("limit", "starting_after"):
            raise InvalidRequest(
                f"Received unknown parameter: {name}", code="parameter_unknown", param=name
            )
    limit = _page_size(query.get("limit"))
    after_seq = 0
    starting_after = query.get("starting_after")
    if starting_after:
        seq = ledger.intent_seq(starting_after)
        if seq is None:
            raise InvalidRequest(
                f"No such payment_intent: '{starting_after}'",
                code="resource_missing",
                param="starting_after",
            )
        after_seq = seq
    found = ledger.intents(metadata=metadata, after_seq=after_seq, limit=limit + 1)
    return {
        "object": "list",
        "url": "/v1/payment_intents",
        "data": [intent.as_json() for intent in found[:limit]],
        "has_more": len(found) > limit,
    }


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE:
        raise InvalidRequest(
            f"limit must be an integer from 1 to {MAX_PAGE}",
            code="parameter_invalid_integer",
            param="limit",
        )
    return size


def _existing(ledger: Ledger, intent_id: str, *, param: str | None = None) -> PaymentIntent:
    intent = ledger.intent(intent_id)
    if intent is None:
        raise ResourceMissing(f"No such payment_intent: '{intent_id}'", param=param)
    return intent


def _unexpected_state(intent: PaymentIntent, action: str) -> InvalidRequest:
    return InvalidRequest(
        f"You cannot {action} this PaymentIntent because it has a status of {intent.status}.",
        code="payment_intent_unexpected_state",
        payment_intent=intent.as_json(),
    )
