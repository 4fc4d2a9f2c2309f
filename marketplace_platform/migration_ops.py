"""Schema operations shared by several services' migrations.

Migrations are history: once released, a function here never changes; a new shape gets a new
function (`..._v2`) and a new migration.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


def create_outbox_v1(schema: str) -> None:
    """Create `<schema>.outbox` as `marketplace_platform.outbox.define_outbox_table` describes."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("event_id", sa.Uuid, nullable=False, unique=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("aggregate_type", sa.Text, nullable=False),
        sa.Column("aggregate_id", sa.Text, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("envelope", sa.LargeBinary, nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        schema=schema,
    )
    op.create_index(
        "outbox_unpublished",
        "outbox",
        ["id"],
        schema=schema,
        postgresql_where=sa.text("published_at IS NULL"),
    )


# The Region fence (marketplace_platform.fence): one row in `platform.region_fence`, created by
# whichever schema's chain runs first, and a statement-level trigger on every table of each
# schema that refuses a write from a session whose `marketplace.region_epoch` is another epoch.
_FENCE_LOCK = "migrate:platform"
_CREATE_FENCE_V1 = (
    "CREATE SCHEMA IF NOT EXISTS platform",
    """
    CREATE TABLE IF NOT EXISTS platform.region_fence (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        epoch bigint NOT NULL CHECK (epoch >= 1)
    )
    """,
    "INSERT INTO platform.region_fence (singleton, epoch) VALUES (true, 1) ON CONFLICT DO NOTHING",
    # Every service's role reads the fence (its trigger runs as the writer); none may change it
    # but its owner (the operator who raises the epoch).
    "GRANT USAGE ON SCHEMA platform TO PUBLIC",
    "GRANT SELECT ON platform.region_fence TO PUBLIC",
)
# A session without the setting (NULL, or '' once set and reset) is not fenced: migrations,
# psql and operators. The fence's read takes an ACCESS SHARE lock held to the transaction's end,
# so raising the epoch (ACCESS EXCLUSIVE) waits for every open transaction that has written;
# the fence cannot change under a transaction that has read it, so its later statements skip
# the read (a transaction-local flag): one read per writing transaction, not per statement.
_REFUSE_STALE_REGION_V1 = """
    CREATE FUNCTION platform.refuse_stale_region() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        session_epoch text := current_setting('marketplace.region_epoch', true);
        fence_epoch bigint;
    BEGIN
        IF session_epoch IS NULL OR session_epoch = ''
           OR current_setting('marketplace.region_fence_checked', true) = 'yes' THEN
            RETURN NULL;
        END IF;
        SELECT epoch INTO fence_epoch FROM platform.region_fence;
        IF fence_epoch IS DISTINCT FROM session_epoch::bigint THEN
            RAISE EXCEPTION USING
                ERRCODE = 'MPF01',
                MESSAGE = format(
                    'fenced: this session writes as Region epoch %s, the fence is at epoch %s',
                    session_epoch, fence_epoch
                ),
                HINT = 'restart the process with REGION_EPOCH set to the fence''s epoch';
        END IF;
        PERFORM set_config('marketplace.region_fence_checked', 'yes', true);
        RETURN NULL;
    END
    $$
"""
FENCE_TRIGGER = "region_fence"


def create_region_fence_v1() -> None:
    """Create `platform.region_fence` (epoch 1) and its trigger function unless they exist,
    under a lock of their own: every schema's chain runs this, several perhaps at once."""
    op.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))").bindparams(key=_FENCE_LOCK))
    for statement in _CREATE_FENCE_V1:
        op.execute(statement)
    # Created once, never replaced here: a later chain applying this revision must not put
    # back an older body over a newer one.
    exists = op.get_bind().execute(
        sa.text("SELECT to_regprocedure('platform.refuse_stale_region()') IS NOT NULL")
    )
    if not exists.scalar_one():
        op.execute(_REFUSE_STALE_REGION_V1)


def fence_tables_v1(schema: str) -> None:
    """Attach the fence's trigger (once per statement, before any INSERT, UPDATE, DELETE or
    TRUNCATE) to every table of `schema` that lacks it; a migration adding tables calls it
    again (tests/integration/test_region_fence.py fails while a table lacks it)."""
    create_region_fence_v1()
    unfenced = op.get_bind().execute(
        sa.text(
            """
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = :schema AND c.relkind IN ('r', 'p')
              AND NOT EXISTS (
                  SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = :trigger
              )
            ORDER BY c.relname
            """
        ).bindparams(schema=schema, trigger=FENCE_TRIGGER)
    )
    for (table,) in unfenced.all():
        op.execute(
            f"CREATE TRIGGER {FENCE_TRIGGER} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f'ON "{schema}"."{table}" FOR EACH STATEMENT '
            "EXECUTE FUNCTION platform.refuse_stale_region()"
        )


def unfence_tables_v1(schema: str) -> None:
    """Drop the fence's trigger from every table of `schema` (the fence itself stays: other
    schemas' tables use it)."""
    tables = op.get_bind().execute(
        sa.text(
            """
            SELECT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = :schema AND t.tgname = :trigger
            """
        ).bindparams(schema=schema, trigger=FENCE_TRIGGER)
    )
    for (table,) in tables.all():
        op.execute(f'DROP TRIGGER {FENCE_TRIGGER} ON "{schema}"."{table}"')
