"""The order aggregate and its state machine. Pure rules: no I/O, no transport codes.

PENDING -> CONFIRMED -> SHIPPED, or PENDING/CONFIRMED -> CANCELLED with a failure reason.
Every transition either changes the order, is a recognised repeat (returns False, changes
nothing), or raises: an illegal transition never passes silently.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from marketplace_platform.ids import derived_id
from marketplace_platform.money import Money
from services.checkout.domain.errors import CancelRequested, IllegalTransition


class OrderStatus(StrEnum):
    """Where an order is in its life."""

    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    SHIPPED = "SHIPPED"
    CANCELLED = "CANCELLED"


class FailureReason(StrEnum):
    """Why an order ended CANCELLED."""

    PAYMENT_DECLINED = "PAYMENT_DECLINED"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    FRAUD_REJECTED = "FRAUD_REJECTED"
    TIMEOUT = "TIMEOUT"
    CUSTOMER_CANCELLED = "CUSTOMER_CANCELLED"


class FraudDecision(StrEnum):
    """The fraud check's verdict."""

    APPROVE = "APPROVE"
    REJECT = "REJECT"


@dataclass(frozen=True)
class OrderLine:
    """One SKU bought, with the unit price frozen when the order was placed."""

    sku: str
    merchant_id: str
    name: str
    quantity: int
    unit_price: Money

    @property
    def line_total(self) -> Money:
        """unit_price times quantity."""
        return self.unit_price.times(self.quantity)


@dataclass(frozen=True)
class ShippingAddress:
    """Where the order ships, copied onto the order when it is placed."""

    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str = ""
    region: str = ""


@dataclass(frozen=True)
class FraudAssessment:
    """The first (and only) fraud verdict on an order."""

    decision: FraudDecision
    score: int
    reason: str


# The namespace of shipment ids (fixed forever, as the order ids' is).
SHIPMENT_ID_NAMESPACE = uuid.UUID("9d4e2a71-3c5b-4f86-a0e7-5b1c8f2d6e93")


def shipment_id_for(order_id: uuid.UUID, merchant_id: str) -> uuid.UUID:
    """The id of an order's one shipment of a merchant: derived, like the order's own, so the
    order confirmed again in another Region (whose replica lost the first confirmation) asks
    the carrier for the same parcel, not a second one."""
    return derived_id(SHIPMENT_ID_NAMESPACE, str(order_id), merchant_id)


@dataclass(frozen=True)
class Shipment:
    """One merchant's parcel: requested at confirmation, shipped when the carrier takes it."""

    shipment_id: uuid.UUID
    merchant_id: str
    carrier: str = ""
    tracking_number: str = ""
    shipped_at: datetime | None = None

    @property
    def shipped(self) -> bool:
        """Whether the carrier has the parcel."""
        return self.shipped_at is not None


@dataclass
class Order:
    """A customer's order: the consistency boundary of checkout."""

    order_id: uuid.UUID
    customer_id: str
    cart_id: uuid.UUID
    lines: tuple[OrderLine, ...]
    shipping_address: ShippingAddress
    payment_method: str
    status: OrderStatus = OrderStatus.PENDING
    failure_reason: FailureReason | None = None
    failure_detail: str = ""
    tax: Money | None = None
    fraud: FraudAssessment | None = None
    reservation_id: uuid.UUID | None = None
    payment_id: uuid.UUID | None = None
    cancel_requested: bool = False
    shipments: tuple[Shipment, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        if not self.lines:
            raise ValueError("an order needs at least one line")
        currencies = {line.unit_price.currency for line in self.lines}
        if len(currencies) != 1:
            raise ValueError(f"an order is priced in one currency, not {sorted(currencies)}")

    @property
    def currency(self) -> str:
        """The order's one currency."""
        return self.lines[0].unit_price.currency

    @property
    def subtotal(self) -> Money:
        """The sum of line totals."""
        total = Money.zero(self.currency)
        for line in self.lines:
            total = total + line.line_total
        return total

    @property
    def total(self) -> Money | None:
        """subtotal plus tax, once tax is known: the amount the saga authorizes."""
        return None if self.tax is None else self.subtotal + self.tax

    @property
    def merchants(self) -> tuple[str, ...]:
        """The merchants in the order, in first-line order."""
        return tuple(dict.fromkeys(line.merchant_id for line in self.lines))

    def lines_of(self, merchant_id: str) -> tuple[OrderLine, ...]:
        """One merchant's lines."""
        return tuple(line for line in self.lines if line.merchant_id == merchant_id)

    def record_tax(self, tax: Money) -> bool:
        """Store the tax; a repeat keeps the first figure. Only a PENDING order is taxed."""
        if self.tax is not None:
            return False
        self._require(OrderStatus.PENDING, "calculate tax for")
        if tax.currency != self.currency or tax.amount_minor < 0:
            raise ValueError(f"tax {tax} does not fit an order in {self.currency}")
        self.tax = tax
        return True

    def record_fraud(self, assessment: FraudAssessment) -> bool:
        """Store the fraud verdict; a repeat keeps the first one."""
        if self.fraud is not None:
            return False
        self._require(OrderStatus.PENDING, "assess fraud on")
        self.fraud = assessment
        return True

    def confirm(self, *, reservation_id: uuid.UUID, payment_id: uuid.UUID) -> bool:
        """PENDING -> CONFIRMED with the committed reservation and authorized payment.

        A repeat with the same ids changes nothing; a cancelled or cancel-requested order is
        refused with CancelRequested so the saga compensates instead.
        """
        if self.status is OrderStatus.CANCELLED or (
            self.status is OrderStatus.PENDING and self.cancel_requested
        ):
            raise CancelRequested(
                f"order {self.order_id} is {self._described()}; compensate instead",
                metadata={"order_id": str(self.order_id), "status": self.status.value},
            )
        if self.status in (OrderStatus.CONFIRMED, OrderStatus.SHIPPED):
            if (self.reservation_id, self.payment_id) != (reservation_id, payment_id):
                raise IllegalTransition(
                    f"order {self.order_id} was confirmed with another reservation or payment",
                    metadata={"order_id": str(self.order_id)},
                )
            return False
        if self.tax is None:
            raise IllegalTransition(
                f"order {self.order_id} cannot be confirmed before its tax is calculated",
                metadata={"order_id": str(self.order_id)},
            )
        self.status = OrderStatus.CONFIRMED
        self.reservation_id = reservation_id
        self.payment_id = payment_id
        return True

    def request_shipments(self, shipment_ids: Iterable[uuid.UUID]) -> tuple[Shipment, ...]:
        """Assign one shipment per merchant (on confirmation); returns them."""
        self._require(OrderStatus.CONFIRMED, "request shipments for")
        if self.shipments:
            return self.shipments
        ids = list(shipment_ids)
        if len(ids) != len(self.merchants):
            raise ValueError("one shipment id per merchant")
        self.shipments = tuple(
            Shipment(shipment_id=shipment_id, merchant_id=merchant)
            for shipment_id, merchant in zip(ids, self.merchants, strict=True)
        )
        return self.shipments

    def fail(self, reason: FailureReason, detail: str = "") -> bool:
        """PENDING -> CANCELLED after the saga compensated. A CANCELLED order stays as it is."""
        if self.status is OrderStatus.CANCELLED:
            return False
        self._require(OrderStatus.PENDING, "fail")
        self._cancel(reason, detail)
        return True

    def request_cancel(self) -> bool:
        """A customer asks to cancel a PENDING order: its saga compensates and fails it."""
        if self.status is OrderStatus.CANCELLED or self.cancel_requested:
            return False
        self._require(OrderStatus.PENDING, "request cancellation of")
        self.cancel_requested = True
        return True

    def cancel_confirmed(self) -> bool:
        """CONFIRMED -> CANCELLED by the customer while nothing has shipped; the payment and
        the stock are given back afterwards, from OrderCancelled. A parcel with the carrier
        refuses the cancellation: the order ships whole and is charged whole."""
        if self.status is OrderStatus.CANCELLED:
            return False
        self._require(OrderStatus.CONFIRMED, "cancel")
        shipped = [str(s.shipment_id) for s in self.shipments if s.shipped]
        if shipped:
            raise IllegalTransition(
                f"cannot cancel order {self.order_id}: {len(shipped)} of its"
                f" {len(self.shipments)} shipments are with the carrier",
                metadata={"order_id": str(self.order_id), "shipped": ",".join(shipped)},
            )
        self._cancel(FailureReason.CUSTOMER_CANCELLED, "")
        return True

    def mark_shipped(
        self,
        *,
        shipment_id: uuid.UUID,
        merchant_id: str,
        carrier: str,
        tracking_number: str,
        shipped_at: datetime,
    ) -> bool:
        """Record a merchant's parcel; SHIPPED once every merchant has shipped. Repeats no-op."""
        current = next((s for s in self.shipments if s.shipment_id == shipment_id), None)
        if current is not None and current.shipped:
            return False
        self._require(OrderStatus.CONFIRMED, "ship")
        if current is None or current.merchant_id != merchant_id:
            raise IllegalTransition(
                f"order {self.order_id} has no shipment {shipment_id} for merchant {merchant_id}",
                metadata={"order_id": str(self.order_id), "shipment_id": str(shipment_id)},
            )
        shipped = replace(
            current, carrier=carrier, tracking_number=tracking_number, shipped_at=shipped_at
        )
        self.shipments = tuple(shipped if s is current else s for s in self.shipments)
        if all(s.shipped for s in self.shipments):
            self.status = OrderStatus.SHIPPED
        return True

    def _cancel(self, reason: FailureReason, detail: str) -> None:
        self.status = OrderStatus.CANCELLED
        self.failure_reason = reason
        self.failure_detail = detail

    def _require(self, status: OrderStatus, action: str) -> None:
        if self.status is not status:
            raise IllegalTransition(
                f"cannot {action} order {self.order_id}: it is {self._described()}",
                metadata={"order_id": str(self.order_id), "status": self.status.value},
            )

    def _described(self) -> str:
        if self.status is OrderStatus.PENDING and self.cancel_requested:
            return "PENDING with a cancellation requested"
        return self.status.value
