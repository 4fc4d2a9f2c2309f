"""Inventory's tables, all in the `inventory` schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    MetaData,
    Table,
    Text,
    Uuid,
    func,
)

from marketplace_platform.outbox import define_outbox_table

SCHEMA = "inventory"
metadata = MetaData(schema=SCHEMA)

stock_items = Table(
    "stock_items",
    metadata,
    Column("sku", Text, primary_key=True),
    Column("on_hand", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False, server_default="0"),
    Column("sold", BigInteger, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("reserved >= 0 AND on_hand >= reserved", name="stock_never_oversold"),
)

stock_movements = Table(
    "stock_movements",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("sku", Text, nullable=False, index=True),
    Column("on_hand_delta", BigInteger, nullable=False),
    Column("reserved_delta", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("order_id", Uuid),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox = define_outbox_table(metadata)
