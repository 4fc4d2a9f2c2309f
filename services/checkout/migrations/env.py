"""Alembic environment of the checkout schema."""

from marketplace_platform.migrations import run_env
from services.checkout.adapters.tables import SCHEMA, metadata

run_env(SCHEMA, metadata)
