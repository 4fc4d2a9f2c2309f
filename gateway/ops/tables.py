"""The other services' tables as the operator console reads them: only the columns it shows.

The gateway may import no service or worker (tests/unit/test_import_rules.py), so the tables
the services own are declared here again, column for column as far as the console reads them;
tests/unit/test_ops_tables.py checks every column against the owner's own Table. The saga's
and the queues' tables, and the outbox's shape, come from the platform library itself.
"""

from __future__ import annotations

import sqlalchemy as sa

from marketplace_platform.outbox import define_outbox_table

checkout = sa.MetaData(schema="checkout")
payment = sa.MetaData(schema="payment")
inventory = sa.MetaData(schema="inventory")
consumers = sa.MetaData(schema="consumers")

orders = sa.Table(
    "orders",
    checkout,
    sa.Column("order_id", sa.Uuid, primary_key=True),
    sa.Column("customer_id", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("failure_reason", sa.Text),
    sa.Column("failure_detail", sa.Text),
    sa.Column("currency", sa.Text),
    sa.Column("subtotal", sa.BigInteger),
    sa.Column("tax", sa.BigInteger),
    sa.Column("reservation_id", sa.Uuid),
    sa.Column("payment_id", sa.Uuid),
    sa.Column("cancel_requested", sa.Boolean),
    sa.Column("saga_started_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)

order_lines = sa.Table(
    "order_lines",
    checkout,
    sa.Column("order_id", sa.Uuid, primary_key=True),
    sa.Column("line_no", sa.Integer, primary_key=True),
    sa.Column("sku", sa.Text),
    sa.Column("quantity", sa.Integer),
    sa.Column("unit_price", sa.BigInteger),
)

order_shipments = sa.Table(
    "order_shipments",
    checkout,
    sa.Column("shipment_id", sa.Uuid, primary_key=True),
    sa.Column("order_id", sa.Uuid),
    sa.Column("carrier", sa.Text),
    sa.Column("tracking_number", sa.Text),
    sa.Column("shipped_at", sa.DateTime(timezone=True)),
)

payments = sa.Table(
    "payments",
    payment,
    sa.Column("payment_id", sa.Uuid, primary_key=True),
    sa.Column("order_id", sa.Uuid),
    sa.Column("currency", sa.Text),
    sa.Column("amount", sa.BigInteger),
    sa.Column("status", sa.Text),
    sa.Column("authorized", sa.BigInteger),
    sa.Column("captured", sa.BigInteger),
    sa.Column("refunded", sa.BigInteger),
    sa.Column("failure_code", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)

payment_operations = sa.Table(
    "payment_operations",
    payment,
    sa.Column("operation_id", sa.Uuid, primary_key=True),
    sa.Column("payment_id", sa.Uuid),
    sa.Column("kind", sa.Text),
    sa.Column("amount", sa.BigInteger),
    sa.Column("state", sa.Text),
    sa.Column("failure_code", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("updated_at", sa.DateTime(timezone=True)),
)

stock_items = sa.Table(
    "stock_items",
    inventory,
    sa.Column("sku", sa.Text, primary_key=True),
    sa.Column("on_hand", sa.BigInteger),
    sa.Column("reserved", sa.BigInteger),
)

reservations = sa.Table(
    "reservations",
    inventory,
    sa.Column("reservation_id", sa.Uuid, primary_key=True),
    sa.Column("order_id", sa.Uuid),
    sa.Column("status", sa.Text),
    sa.Column("expires_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True)),
    sa.Column("closed_at", sa.DateTime(timezone=True)),
    sa.Column("release_reason", sa.Text),
)

reservation_lines = sa.Table(
    "reservation_lines",
    inventory,
    sa.Column("reservation_id", sa.Uuid, primary_key=True),
    sa.Column("sku", sa.Text, primary_key=True),
    sa.Column("quantity", sa.Integer),
)

shipments = sa.Table(
    "shipments",
    consumers,
    sa.Column("shipment_id", sa.Uuid, primary_key=True),
    sa.Column("order_id", sa.Uuid),
    sa.Column("merchant_id", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("carrier", sa.Text),
    sa.Column("tracking_number", sa.Text),
    sa.Column("shipped_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True)),
)

# Every schema with an outbox, and its table (the platform's one shape).
OUTBOX_SCHEMAS = ("cart", "checkout", "inventory", "payment", "consumers")
outboxes = {schema: define_outbox_table(sa.MetaData(schema=schema)) for schema in OUTBOX_SCHEMAS}
