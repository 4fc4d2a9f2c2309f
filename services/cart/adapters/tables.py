"""Cart's tables, all in the `cart` schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
)

from marketplace_platform.outbox import define_outbox_table

SCHEMA = "cart"
metadata = MetaData(schema=SCHEMA)

products = Table(
    "products",
    metadata,
    Column("sku", Text, primary_key=True),
    Column("merchant_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("price_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("listed", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("price_minor >= 0", name="product_price_not_negative"),
)

carts = Table(
    "carts",
    metadata,
    Column("cart_id", Uuid, primary_key=True),
    Column("customer_id", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("order_id", Uuid, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

cart_lines = Table(
    "cart_lines",
    metadata,
    Column("cart_id", Uuid, ForeignKey(carts.c.cart_id), primary_key=True),
    Column("sku", Text, primary_key=True),
    Column("position", Integer, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    CheckConstraint("quantity BETWEEN 1 AND 1000", name="cart_line_quantity"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("scope", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("operation", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("response", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

cache_invalidations = Table(
    "cache_invalidations",
    metadata,
    Column("cart_id", Uuid, primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox = define_outbox_table(metadata)
