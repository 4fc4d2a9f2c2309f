"""Rendering helpers shared by the consumers: money and lines as plain, stable JSON."""

from __future__ import annotations

import json
from typing import Any

from marketplace.checkout.v1 import checkout_service_pb2 as checkout_pb
from marketplace.common.v1 import money_pb2


def money(value: money_pb2.Money) -> dict[str, Any]:
    """Money as the public API writes it: integer minor units and a currency."""
    return {"amount_minor": value.amount_minor, "currency": value.currency}


def line(value: checkout_pb.OrderLine) -> dict[str, Any]:
    """An order line with its frozen prices."""
    return {
        "sku": value.sku.value,
        "merchant_id": value.merchant_id.value,
        "name": value.name,
        "quantity": value.quantity,
        "unit_price": money(value.unit_price),
        "line_total": money(value.line_total),
    }


def canonical_json(document: Any) -> bytes:
    """Sorted keys, no spaces: the same document always gives the same bytes."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def format_money(value: money_pb2.Money) -> str:
    """'12.50 USD' for a two-decimal currency (minor units / 100)."""
    return f"{value.amount_minor // 100}.{value.amount_minor % 100:02d} {value.currency}"
