"""Alembic environment of the queues schema."""

from marketplace_platform.migrations import run_env
from marketplace_platform.queues.tables import SCHEMA, metadata

run_env(SCHEMA, metadata)
