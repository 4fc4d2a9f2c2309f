"""Payment intents and refunds: their states, amounts and JSON shape."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

AUTHORIZATION_VALIDITY_SECONDS = 7 * 24 * 60 * 60


class IntentStatus(StrEnum):
    """Where a manual-capture payment intent stands."""

    REQUIRES_PAYMENT_METHOD = "requires_payment_method"  # declined: nothing authorized
    REQUIRES_CAPTURE = "requires_capture"  # authorized
    SUCCEEDED = "succeeded"  # captured
    CANCELED = "canceled"  # voided


@dataclass(frozen=True)
class CardBehaviour:
    """How a test payment method answers an authorization."""

    decline_code: str | None  # None: approved
    message: str = ""


# The test payment methods, as a PSP's test mode has them.
TEST_PAYMENT_METHODS: Mapping[str, CardBehaviour] = {
    "pm_card_visa": CardBehaviour(None),
    "pm_card_chargeDeclined": CardBehaviour("generic_decline", "Your card was declined."),
    "pm_card_riskLevelHighest": CardBehaviour(
        "fraudulent", "Your card was declined: the payment was blocked as fraudulent."
    ),
}


@dataclass(frozen=True, kw_only=True)
class PaymentIntent:
    """One authorization and what became of it."""

    id: str
    amount: int
    currency: str
    status: IntentStatus
    amount_capturable: int
    amount_received: int
    amount_refunded: int
    payment_method: str
    capture_method: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    created: int
    capture_before: int
    last_payment_error: Mapping[str, str] | None = None

    def as_json(self) -> dict[str, Any]:
        """The intent as the API shows it."""
        shown: dict[str, Any] = {
            "id": self.id,
            "object": "payment_intent",
            "amount": self.amount,
            "currency": self.currency,
            "status": self.status.value,
            "amount_capturable": self.amount_capturable,
            "amount_received": self.amount_received,
            "amount_refunded": self.amount_refunded,
            "payment_method": self.payment_method,
            "capture_method": self.capture_method,
            "metadata": dict(self.metadata),
            "created": self.created,
            "capture_before": self.capture_before,
        }
        if self.last_payment_error is not None:
            shown["last_payment_error"] = dict(self.last_payment_error)
        return shown


@dataclass(frozen=True, kw_only=True)
class Refund:
    """Money given back from a captured intent."""

    id: str
    amount: int
    currency: str
    payment_intent: str
    status: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    created: int

    def as_json(self) -> dict[str, Any]:
        """The refund as the API shows it."""
        return {
            "id": self.id,
            "object": "refund",
            "amount": self.amount,
            "currency": self.currency,
            "payment_intent": self.payment_intent,
            "status": self.status,
            "metadata": dict(self.metadata),
            "created": self.created,
        }
