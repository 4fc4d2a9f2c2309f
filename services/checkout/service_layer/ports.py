"""The outside systems checkout depends on, as small interfaces (fakes subclass these): the
cart and payment services, checkout's own tables behind the unit of work's repositories, and
the unit of work itself (AbstractCheckoutUnitOfWork)."""

from __future__ import annotations

import abc
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from marketplace_platform.db import AbstractUnitOfWork
from marketplace_platform.money import Money
from services.checkout.domain.idempotency import IdempotencyRecord, PlacedOrder
from services.checkout.domain.order import Order, OrderLine


class CartStatus(StrEnum):
    """A cart's status as the cart service reports it."""

    OPEN = "OPEN"
    CHECKED_OUT = "CHECKED_OUT"


@dataclass(frozen=True)
class PricingProblem:
    """One thing that blocks checking a cart out."""

    kind: str
    detail: str
    sku: str = ""


@dataclass(frozen=True)
class PricedCart:
    """A cart priced for checkout: the lines and prices an order freezes, or why it cannot."""

    cart_id: uuid.UUID
    customer_id: str
    status: CartStatus
    lines: tuple[OrderLine, ...]
    subtotal: Money
    problems: tuple[PricingProblem, ...] = ()
    order_id: uuid.UUID | None = None


class CartPort(abc.ABC):
    """The cart service as PlaceOrder uses it."""

    @abc.abstractmethod
    async def price_cart(self, *, cart_id: uuid.UUID, customer_id: str) -> PricedCart:
        """Price the customer's cart against the catalog now (NotFound for another's cart)."""

    @abc.abstractmethod
    async def mark_checked_out(
        self, *, cart_id: uuid.UUID, customer_id: str, order_id: uuid.UUID
    ) -> None:
        """Freeze the cart as checked out by the order (idempotent)."""


@dataclass(frozen=True)
class PaymentSummary:
    """An order's payment as the customer sees it."""

    status: str
    authorized: Money
    captured: Money
    refunded: Money


class PaymentPort(abc.ABC):
    """The payment service as order reads use it (cancellations settle money from events)."""

    @abc.abstractmethod
    async def summary(self, order_id: uuid.UUID) -> PaymentSummary | None:
        """The order's payment, or None when it has none."""


class OrderRepositoryPort(abc.ABC):
    """Orders, loaded and saved whole, inside the unit of work's transaction."""

    @abc.abstractmethod
    async def add(self, order: Order) -> bool:
        """Insert a new order; False (and nothing written) when its cart already has one."""

    @abc.abstractmethod
    async def order_id_for_cart(self, cart_id: uuid.UUID) -> uuid.UUID | None:
        """The order placed from a cart, if any."""

    @abc.abstractmethod
    async def get(self, order_id: uuid.UUID, *, for_update: bool = False) -> Order | None:
        """One order, optionally locked for a transition until the transaction ends."""

    @abc.abstractmethod
    async def list_for_customer(
        self, customer_id: str, *, before: uuid.UUID | None, limit: int
    ) -> list[Order]:
        """A customer's orders, newest first, placed before the order `before` when given."""

    @abc.abstractmethod
    async def save(self, order: Order) -> None:
        """Write an order's changed state back (lines never change after placement)."""

    @abc.abstractmethod
    async def mark_saga_started(self, order_id: uuid.UUID) -> None:
        """Note that the order's saga execution exists."""

    @abc.abstractmethod
    async def without_saga(self, *, older_than: timedelta, limit: int) -> list[Order]:
        """PENDING orders whose saga start was never recorded, placed before now - older_than."""

    @abc.abstractmethod
    async def pending_since(self, *, older_than: timedelta, limit: int) -> list[uuid.UUID]:
        """PENDING orders placed before now - older_than, oldest first."""


class IdempotencyRepositoryPort(abc.ABC):
    """PlaceOrder's idempotency records, keyed by (customer, key)."""

    @abc.abstractmethod
    async def now(self) -> datetime:
        """The clock every lease is measured by."""

    @abc.abstractmethod
    async def claim(
        self, *, customer_id: str, key: str, fingerprint: str, lease: timedelta
    ) -> bool:
        """Insert a STARTED record holding a lease; False when the key already has one."""

    @abc.abstractmethod
    async def get(self, customer_id: str, key: str) -> IdempotencyRecord | None:
        """The record, locked until the transaction ends."""

    @abc.abstractmethod
    async def extend_lease(self, customer_id: str, key: str, lease: timedelta) -> None:
        """Take over (or keep) a STARTED record for another lease."""

    @abc.abstractmethod
    async def release_lease(self, customer_id: str, key: str) -> None:
        """Let the next request with this key proceed at once (the request did not complete)."""

    @abc.abstractmethod
    async def complete(self, customer_id: str, key: str, response: PlacedOrder) -> None:
        """Store the response; from now on the key replays it."""

    async def complete_claim(
        self,
        *,
        customer_id: str,
        key: str,
        fingerprint: str,
        lease: timedelta,
        response: PlacedOrder,
    ) -> None:
        """Store the response of the request that claimed the key, claiming it again first if
        it was reaped since (a very slow request); from now on the key replays it. (The SQL
        repository does this in one statement.)"""
        if await self.get(customer_id, key) is None:
            await self.claim(customer_id=customer_id, key=key, fingerprint=fingerprint, lease=lease)
        await self.complete(customer_id, key, response)

    @abc.abstractmethod
    async def reap(self, *, older_than: timedelta, limit: int) -> int:
        """Delete up to `limit` records created before now - older_than; how many."""


class AbstractCheckoutUnitOfWork(AbstractUnitOfWork, Protocol):
    """One checkout transaction as the use cases see it: entering begins it, a clean exit
    commits, an error rolls back; its orders, its idempotency keys and its outbox together."""

    @property
    def orders(self) -> OrderRepositoryPort:
        """The orders, inside this transaction."""
        ...

    @property
    def keys(self) -> IdempotencyRepositoryPort:
        """PlaceOrder's idempotency records, inside this transaction."""
        ...
