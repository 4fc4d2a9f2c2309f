"""Carts and products as compact JSON: what the cache holds and idempotency records store."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from marketplace_platform.money import Money
from services.cart.domain.cart import Cart, CartLine, CartStatus
from services.cart.domain.catalog import Product


def cart_to_json(cart: Cart) -> str:
    """A cart as JSON text."""
    return json.dumps(
        {
            "id": str(cart.cart_id),
            "customer": cart.customer_id,
            "version": cart.version,
            "status": cart.status.value,
            "order": str(cart.order_id) if cart.order_id else None,
            "created": cart.created_at.isoformat(),
            "updated": cart.updated_at.isoformat(),
            "lines": [
                [
                    line.sku,
                    line.merchant_id,
                    line.name,
                    line.quantity,
                    line.unit_price.amount_minor,
                    line.unit_price.currency,
                ]
                for line in cart.lines
            ],
        },
        separators=(",", ":"),
    )


def cart_from_json(text: str) -> Cart:
    """The cart `cart_to_json` wrote."""
    data: dict[str, Any] = json.loads(text)
    return Cart(
        cart_id=uuid.UUID(data["id"]),
        customer_id=data["customer"],
        version=data["version"],
        status=CartStatus(data["status"]),
        order_id=uuid.UUID(data["order"]) if data["order"] else None,
        created_at=datetime.fromisoformat(data["created"]),
        updated_at=datetime.fromisoformat(data["updated"]),
        lines=tuple(
            CartLine(
                sku=sku,
                merchant_id=merchant,
                name=name,
                quantity=quantity,
                unit_price=Money(amount, currency),
            )
            for sku, merchant, name, quantity, amount, currency in data["lines"]
        ),
    )


def product_to_json(product: Product) -> str:
    """A product as JSON text."""
    return json.dumps(
        {
            "sku": product.sku,
            "merchant": product.merchant_id,
            "name": product.name,
            "price": [product.price.amount_minor, product.price.currency],
            "listed": product.listed,
            "created": product.created_at.isoformat() if product.created_at else None,
            "updated": product.updated_at.isoformat() if product.updated_at else None,
        }
    )


def product_from_json(text: str) -> Product:
    """The product `product_to_json` wrote."""
    data: dict[str, Any] = json.loads(text)
    return Product(
        sku=data["sku"],
        merchant_id=data["merchant"],
        name=data["name"],
        price=Money(*data["price"]),
        listed=data["listed"],
        created_at=datetime.fromisoformat(data["created"]) if data["created"] else None,
        updated_at=datetime.fromisoformat(data["updated"]) if data["updated"] else None,
    )
