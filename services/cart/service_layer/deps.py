"""What every cart use case is given: units of work, the cache, the catalog's default currency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.cart.service_layer.ports import AbstractCartUnitOfWork, CartCache


@dataclass(frozen=True)
class CartDeps:
    """What the cart use cases need: units of work, the cache, the catalog's default currency.

    Every use case takes its command (or arguments) first and these last:
    `async def use_case(command, deps: CartDeps) -> result`.
    """

    unit_of_work: Callable[[], AbstractCartUnitOfWork]
    cache: CartCache
    default_currency: str = "USD"
