"""Checkout's tables, all in the `checkout` schema."""

from __future__ import annotations

from sqlalchemy import MetaData

from marketplace_platform.outbox import define_outbox_table

SCHEMA = "checkout"
metadata = MetaData(schema=SCHEMA)

outbox = define_outbox_table(metadata)
