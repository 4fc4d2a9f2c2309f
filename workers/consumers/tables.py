"""The consumers' tables in their own `consumers` schema: inbox, shipments, analytics' written
objects, outbox."""

from __future__ import annotations

import sqlalchemy as sa

from marketplace_platform.outbox import define_outbox_table

SCHEMA = "consumers"

metadata = sa.MetaData(schema=SCHEMA)

# One row per (consumer, event) handled: inserted first in the handler's transaction, so a
# concurrent duplicate waits on it, and committed with the consumer's own effect.
inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("consumer", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Uuid, primary_key=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column(
        "processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

SHIPMENT_STATUSES = ("CREATED", "CANCELLED")

# The shipping consumer's parcels: one per shipment id, whichever event told it first.
shipments = sa.Table(
    "shipments",
    metadata,
    sa.Column("shipment_id", sa.Uuid, primary_key=True),
    sa.Column("order_id", sa.Uuid, nullable=False, index=True),
    sa.Column("merchant_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("carrier", sa.Text),
    sa.Column("tracking_number", sa.Text),
    sa.Column("shipped_at", sa.DateTime(timezone=True)),
    sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
    sa.CheckConstraint(f"status IN {SHIPMENT_STATUSES}", name="shipment_status_known"),
)

# Orders the shipping consumer learnt were cancelled: no shipment is created for them after.
cancelled_orders = sa.Table(
    "cancelled_orders",
    metadata,
    sa.Column("order_id", sa.Uuid, primary_key=True),
    sa.Column(
        "cancelled_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# The analytics consumer's objects written for facts whose inbox row has not committed yet:
# committed before the write, deleted with the inbox rows (workers/consumers/analytics/sink.py).
analytics_written = sa.Table(
    "analytics_written",
    metadata,
    sa.Column("fact_id", sa.Uuid, primary_key=True),
    sa.Column("object_key", sa.Text, nullable=False),
    sa.Column(
        "written_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    ),
)

# ShipmentCreated events written with the shipment, published by the outbox relay.
outbox = define_outbox_table(metadata)
