"""Payment's tables, all in the `payment` schema."""

from __future__ import annotations

from sqlalchemy import MetaData

from marketplace_platform.outbox import define_outbox_table

SCHEMA = "payment"
metadata = MetaData(schema=SCHEMA)

outbox = define_outbox_table(metadata)
