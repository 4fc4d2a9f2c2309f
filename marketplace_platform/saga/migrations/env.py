"""Alembic environment of the saga schema."""

from marketplace_platform.migrations import run_env
from marketplace_platform.saga.tables import SCHEMA, metadata

run_env(SCHEMA, metadata)
