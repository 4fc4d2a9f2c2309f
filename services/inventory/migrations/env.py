"""Alembic environment of the inventory schema."""

from marketplace_platform.migrations import run_env
from services.inventory.adapters.tables import SCHEMA, metadata

run_env(SCHEMA, metadata)
