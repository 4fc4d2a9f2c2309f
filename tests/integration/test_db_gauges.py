"""The outbox relay's database gauges against a migrated database: a queue's message and an
empty DLQ, a saga execution stuck past the bound, a parked one, the checkout outbox's backlog."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace_platform.queues import QueueDefinition
from marketplace_platform.queues.postgres import PostgresQueues
from workers.outbox_relay.gauges import refresh

pytestmark = pytest.mark.own_database

_EXECUTION = text(
    "INSERT INTO saga.executions (id, name, state_machine, status, input, current_state,"
    " state_entered_at, started_at, next_run_at, last_seq)"
    " VALUES (:id, :name, 'gauges-test', :status, '{}', 'AuthorizePayment',"
    " now() - interval '1 hour', now(), now() + interval '1 day', 0)"
)


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_refresh_sets_every_database_gauge(engine: AsyncEngine) -> None:
    name = f"gauges-{uuid.uuid4().hex[:10]}"
    queues = PostgresQueues(engine, [QueueDefinition(name, f"{name}-dlq", 3, 30)])
    await queues.send(name, "a body")
    async with engine.begin() as connection:
        for status in ("RUNNING", "FAILED"):
            await connection.execute(
                _EXECUTION, {"id": uuid.uuid4(), "name": f"{name}-{status}", "status": status}
            )

    await refresh(engine, queues, schemas=None, stuck_after_seconds=60)

    assert sample("checkout_queue_messages", queue=name, dlq="false") == 1
    assert sample("checkout_queue_messages", queue=f"{name}-dlq", dlq="true") == 0
    age = sample("checkout_queue_oldest_message_age_seconds", queue=name, dlq="false")
    assert age is not None
    assert age >= 0
    assert (sample("checkout_saga_executions_stuck") or 0) >= 1
    assert (sample("checkout_saga_executions_parked") or 0) >= 1
    assert (sample("checkout_saga_executions_running") or 0) >= 1
    assert sample("checkout_outbox_unpublished", schema="checkout") is not None
