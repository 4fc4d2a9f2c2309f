"""Alembic environment of the consumers schema."""

from marketplace_platform.migrations import run_env
from workers.consumers.tables import SCHEMA, metadata

run_env(SCHEMA, metadata)
