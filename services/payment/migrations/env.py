"""Alembic environment of the payment schema."""

from marketplace_platform.migrations import run_env
from services.payment.adapters.tables import SCHEMA, metadata

run_env(SCHEMA, metadata)
