"""Synthetic stored orders for the checkout benchmark, written straight into checkout's tables.

Each stored order is CONFIRMED, has one line and a completed idempotency record, like the
orders checkout writes, placed over the past 90 days; ids are hash-shaped UUIDv8s like the ones
checkout derives from each purchase (services.checkout.domain.idempotency.order_id_for), so
they land all over the primary key's index as real orders do. Rows are made by generate_series
inside PostgreSQL, in batches, so a million takes minutes, not hours.
"""

from __future__ import annotations

import time

import asyncpg  # type: ignore[import-untyped]

STORED_PREFIX = "stored-"
BATCH = 100_000

# $1 = first number, $2 = last number (inclusive). The id is md5-derived bits with version 8
# and the RFC variant, as a derived order id is laid out; `at` goes through the past 90 days.
_NUMBERED = """
    SELECT i,
           (substr(md5(i::text), 1, 12)
            || '8' || substr(md5(i::text), 13, 3)
            || '8' || substr(md5(i::text), 16, 15))::uuid AS order_id,
           now() - interval '90 days' + i * interval '7 milliseconds' AS at
    FROM generate_series($1::bigint, $2::bigint) AS i
"""

_ORDERS = f"""
    INSERT INTO checkout.orders (order_id, customer_id, cart_id, status, currency, subtotal, tax,
        shipping_address, payment_method, fraud_decision, fraud_score, reservation_id,
        payment_id, saga_started_at, created_at, updated_at)
    SELECT order_id, '{STORED_PREFIX}' || (i % 50000), gen_random_uuid(), 'CONFIRMED', 'USD',
        1000 + i % 9000, 80 + i % 700,
        '{{"name": "Stored Customer", "line1": "1 Main St", "city": "Springfield",
          "postal_code": "12345", "country": "US"}}'::jsonb,
        'pm_card_visa', 'APPROVE', 10, gen_random_uuid(), gen_random_uuid(), at, at,
        at + interval '150 milliseconds'
    FROM ({_NUMBERED}) AS n
"""

_LINES = f"""
    INSERT INTO checkout.order_lines (order_id, line_no, sku, merchant_id, name, quantity,
        unit_price)
    SELECT order_id, 1, 'STORED-' || (i % 1000), 'default', 'Stored product', 1, 1000 + i % 9000
    FROM ({_NUMBERED}) AS n
"""

_KEYS = f"""
    INSERT INTO checkout.idempotency_keys (customer_id, key, fingerprint, state, locked_until,
        response, created_at)
    SELECT '{STORED_PREFIX}' || (i % 50000), 'stored-key-' || i, md5(i::text), 'COMPLETED', at,
        jsonb_build_object('order_id', order_id::text, 'status', 'PENDING'), at
    FROM ({_NUMBERED}) AS n
"""


async def stored_orders(connection: asyncpg.Connection) -> int:
    """How many synthetic stored orders the database holds."""
    count: int = await connection.fetchval(
        "SELECT count(*) FROM checkout.orders WHERE customer_id LIKE $1", f"{STORED_PREFIX}%"
    )
    return count


async def store_orders(database_url: str, total: int) -> float:
    """Top the synthetic stored orders up to `total`; return the seconds it took."""
    started = time.monotonic()
    connection = await asyncpg.connect(database_url)
    try:
        have = await stored_orders(connection)
        for first in range(have + 1, total + 1, BATCH):
            last = min(first + BATCH - 1, total)
            async with connection.transaction():
                for statement in (_ORDERS, _LINES, _KEYS):
                    await connection.execute(statement, first, last)
        if total > have:
            # What autovacuum would do soon after a bulk load; the load then sees fresh stats.
            for table in ("orders", "order_lines", "idempotency_keys"):
                await connection.execute(f"VACUUM ANALYZE checkout.{table}")
    finally:
        await connection.close()
    return time.monotonic() - started
