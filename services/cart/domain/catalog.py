"""The product catalog: what can be sold, by whom, at what price. Pure values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from marketplace_platform.money import Money

DEFAULT_MERCHANT = "default"


@dataclass(frozen=True, kw_only=True)
class Product:
    """A sellable SKU: its merchant, display name, unit price and whether it is listed."""

    sku: str
    merchant_id: str
    name: str
    price: Money
    listed: bool
    created_at: datetime | None = None
    updated_at: datetime | None = None
