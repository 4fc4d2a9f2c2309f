"""Inventory's tables, all in the `inventory` schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Integer,
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

reservations = Table(
    "reservations",
    metadata,
    Column("reservation_id", Uuid, primary_key=True),
    Column("order_id", Uuid, nullable=False, unique=True),
    Column("status", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("closed_at", DateTime(timezone=True)),
    Column("release_reason", Text),
)

reservation_lines = Table(
    "reservation_lines",
    metadata,
    Column("reservation_id", Uuid, ForeignKey(reservations.c.reservation_id), primary_key=True),
    Column("sku", Text, primary_key=True),
    Column("quantity", Integer, nullable=False),
    CheckConstraint("quantity > 0", name="reservation_line_positive"),
)

outbox = define_outbox_table(metadata)
