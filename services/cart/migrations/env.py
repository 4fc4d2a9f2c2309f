"""Alembic environment of the cart schema."""

from marketplace_platform.migrations import run_env
from services.cart.adapters.tables import SCHEMA, metadata

run_env(SCHEMA, metadata)
