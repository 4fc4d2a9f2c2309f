"""Checkout's tables, all in the `checkout` schema."""

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
from sqlalchemy.dialects.postgresql import JSONB

from marketplace_platform.outbox import define_outbox_table

SCHEMA = "checkout"
metadata = MetaData(schema=SCHEMA)

outbox = define_outbox_table(metadata)

orders = Table(
    "orders",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("customer_id", Text, nullable=False),
    # A cart produces at most one order, whatever idempotency key the client sends.
    Column("cart_id", Uuid, nullable=False, unique=True),
    Column("status", Text, nullable=False),
    Column("failure_reason", Text),
    Column("failure_detail", Text, nullable=False, server_default=""),
    Column("currency", Text, nullable=False),
    Column("subtotal", BigInteger, nullable=False),
    Column("tax", BigInteger),
    Column("shipping_address", JSONB, nullable=False),
    Column("payment_method", Text, nullable=False),
    Column("fraud_decision", Text),
    Column("fraud_score", Integer),
    Column("fraud_reason", Text),
    Column("reservation_id", Uuid),
    Column("payment_id", Uuid),
    Column("cancel_requested", Boolean, nullable=False, server_default="false"),
    Column("saga_started_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("subtotal >= 0 AND (tax IS NULL OR tax >= 0)", name="order_money_positive"),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", Uuid, ForeignKey(orders.c.order_id), primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("sku", Text, nullable=False),
    Column("merchant_id", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", BigInteger, nullable=False),
    CheckConstraint("quantity > 0 AND unit_price >= 0", name="order_line_positive"),
)

order_shipments = Table(
    "order_shipments",
    metadata,
    Column("shipment_id", Uuid, primary_key=True),
    Column("order_id", Uuid, ForeignKey(orders.c.order_id), nullable=False, index=True),
    Column("merchant_id", Text, nullable=False),
    Column("carrier", Text, nullable=False, server_default=""),
    Column("tracking_number", Text, nullable=False, server_default=""),
    Column("shipped_at", DateTime(timezone=True)),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("customer_id", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("fingerprint", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("locked_until", DateTime(timezone=True), nullable=False),
    Column("response", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
