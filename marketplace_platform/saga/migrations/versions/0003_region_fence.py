"""The Region fence on every table of the saga schema (marketplace_platform.fence).

Creates `platform.region_fence` (epoch 1) and its trigger function unless another schema's
chain did first, then attaches the statement-level trigger that refuses a write from a session
of another Region epoch to every table of the schema.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from marketplace_platform.migration_ops import fence_tables_v1, unfence_tables_v1

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "saga"


def upgrade() -> None:
    fence_tables_v1(SCHEMA)


def downgrade() -> None:
    unfence_tables_v1(SCHEMA)
