"""Cart's tables, all in the `cart` schema."""

from __future__ import annotations

from sqlalchemy import MetaData

from marketplace_platform.outbox import define_outbox_table

SCHEMA = "cart"
metadata = MetaData(schema=SCHEMA)

outbox = define_outbox_table(metadata)
