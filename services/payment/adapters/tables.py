"""Payment's tables, all in the `payment` schema."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)

from marketplace_platform.outbox import define_outbox_table

SCHEMA = "payment"
metadata = MetaData(schema=SCHEMA)

payments = Table(
    "payments",
    metadata,
    Column("payment_id", Uuid, primary_key=True),
    Column("order_id", Uuid, nullable=False, unique=True),
    Column("customer_id", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("payment_method", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("status", Text, nullable=False),
    Column("authorized", BigInteger, nullable=False, server_default="0"),
    Column("captured", BigInteger, nullable=False, server_default="0"),
    Column("refunded", BigInteger, nullable=False, server_default="0"),
    Column("psp_intent_id", Text),
    Column("failure_code", Text),
    Column("capture_before", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "captured <= authorized AND refunded <= captured AND authorized <= amount",
        name="payment_amounts_in_order",
    ),
)

payment_operations = Table(
    "payment_operations",
    metadata,
    Column("operation_id", Uuid, primary_key=True),
    Column("payment_id", Uuid, ForeignKey(payments.c.payment_id), nullable=False),
    Column("kind", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("request_key", Text, nullable=False),
    Column("failure_code", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("payment_id", "kind", "request_key", name="operation_per_request"),
)

# Orders whose payment was released (ReleaseOrderPayment): they are never authorized again, and
# reconciliation releases whatever a late authorization of theirs holds.
cancelled_orders = Table(
    "cancelled_orders",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("cancelled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

outbox = define_outbox_table(metadata)
