"""What every cart use case is given: units of work, the cache, the catalog's default currency."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.cart.adapters.cart_cache import CartCache
from services.cart.service_layer.unit_of_work import AbstractCartUnitOfWork


@dataclass(frozen=True)
class CartDeps:
    """What the cart use cases need: units of work, the cache, the catalog's default currency.

    Every use case takes its command (or arguments) first and these last:
    `async def use_case(command, deps: CartDeps) -> result`.
    """

    unit_of_work: Callable[[], AbstractCartUnitOfWork]
    cache: CartCache
    default_currency: str = "USD"
