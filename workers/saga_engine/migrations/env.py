"""Alembic environment of the saga schema."""

from marketplace_platform.migrations import run_env
from workers.saga_engine.tables import SCHEMA, metadata

run_env(SCHEMA, metadata)
