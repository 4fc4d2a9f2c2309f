"""The operators' queue tool as a real process, on the local queues and on SQS (moto in server
mode): a poison event lands in the DLQ after the maximum receives, `list` shows it, `dlq` names
it, `redrive` returns it to its queue, and nothing is lost on the way."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from marketplace.events.v1 import shipping_events_pb2
from marketplace_platform.event_bus import EventBus, decode_message_body
from marketplace_platform.event_bus.eventbridge import EventBridgeBus
from marketplace_platform.event_bus.local import LocalEventBus
from marketplace_platform.event_bus.provision import create_eventbridge_rules
from marketplace_platform.event_bus.rules import Routing, load_routing
from marketplace_platform.outbox import OutboxWriter, define_outbox_table
from marketplace_platform.queues import Queues
from marketplace_platform.queues.postgres import PostgresQueues
from marketplace_platform.queues.provision import create_sqs_queues
from marketplace_platform.queues.sqs import SqsQueues
from tests.support.aws import AWS_TEST_CREDENTIALS

ROOT = Path(__file__).resolve().parents[2]


class Setup:
    def __init__(self, bus: EventBus, queues: Queues, routing: Routing, env: dict[str, str]):
        self.bus = bus
        self.queues = queues
        self.routing = routing
        self.env = env

    async def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the tool as its own process (in a thread, so the loop keeps going)."""
        return await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "workers.queue_admin", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    async def admin(self, *args: str) -> str:
        """Run the tool; its standard output (it must succeed)."""
        done = await self.run(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(params=["local", "sqs"])
async def setup(
    request: pytest.FixtureRequest,
    engine: AsyncEngine,
    migrated_database_url: str,
) -> Setup:
    prefix = f"a{uuid.uuid4().hex[:8]}-"
    routing = load_routing().prefixed(prefix)
    env = {
        **os.environ,
        "DATABASE_URL": migrated_database_url,
        "RELAY_QUEUE_PREFIX": prefix,
        "QUEUE_BACKEND": request.param,
    }
    if request.param == "local":
        queues = PostgresQueues(engine, routing.queues)
        return Setup(LocalEventBus(routing, queues), queues, routing, env)
    endpoint = request.getfixturevalue("moto_endpoint")
    request.getfixturevalue("aws_credentials")
    env.update(AWS_TEST_CREDENTIALS, AWS_ENDPOINT_URL=endpoint)
    import boto3  # type: ignore[import-untyped]

    sqs = boto3.client("sqs", region_name="us-east-1", endpoint_url=endpoint)
    events = boto3.client("events", region_name="us-east-1", endpoint_url=endpoint)
    routing = Routing(f"{prefix}bus", routing.rules, routing.queues)
    arns = await asyncio.to_thread(create_sqs_queues, sqs, routing.queues)
    await asyncio.to_thread(create_eventbridge_rules, events, routing, arns)
    return Setup(
        EventBridgeBus(events, routing.event_bus_name), SqsQueues(sqs, routing.queues), routing, env
    )


def table_row(listing: str, queue: str) -> list[str]:
    for line in listing.splitlines():
        if line.split()[0] == queue:
            return line.split()
    raise AssertionError(f"{queue} missing from\n{listing}")


async def test_a_poison_event_is_dead_lettered_inspected_and_redriven(setup: Setup) -> None:
    shipping = next(q for q in setup.routing.queues if q.name.endswith("-shipping"))
    writer = OutboxWriter(define_outbox_table(MetaData()), producer="checkout")
    good = [
        writer.envelope(
            shipping_events_pb2.ShipmentRequested(), aggregate_type="order", aggregate_id=str(n)
        )
        for n in range(3)
    ]
    poison = writer.envelope(
        shipping_events_pb2.ShipmentRequested(), aggregate_type="order", aggregate_id="poison"
    )
    assert not (await setup.bus.publish([*good, poison])).failed

    # A consumer that fails on the poison event every time, and handles the rest.
    handled: list[str] = []
    poison_receives = 0
    for _ in range(200):
        batch = await setup.queues.receive(shipping.name, max_messages=10, wait_seconds=0.2)
        if not batch and poison_receives >= shipping.max_receive_count:
            break
        for message in batch:
            envelope = decode_message_body(message.body)
            if envelope.event_id == poison.event_id:
                poison_receives += 1
                await setup.queues.change_visibility(shipping.name, message.receipt_handle, 0)
            else:
                handled.append(envelope.event_id)
                await setup.queues.delete(shipping.name, message.receipt_handle)
    assert sorted(handled) == sorted(e.event_id for e in good)
    assert poison_receives == shipping.max_receive_count

    listing = await setup.admin("list")
    assert table_row(listing, shipping.name)[1:3] == ["0", "0"]
    assert table_row(listing, shipping.dead_letter_queue)[1:3] == ["1", "0"]

    inspected = await setup.admin("dlq", shipping.name)
    (dead,) = [json.loads(line) for line in inspected.splitlines()]
    assert dead["event_id"] == poison.event_id
    assert dead["event_type"] == "marketplace.events.v1.ShipmentRequested"
    assert dead["aggregate"] == "order/poison"

    redriven = await setup.admin("redrive", shipping.name)
    assert redriven.strip() == f"redrove 1 message(s) to {shipping.name}"
    listing = await setup.admin("list")
    assert table_row(listing, shipping.name)[1:3] == ["1", "0"]
    assert table_row(listing, shipping.dead_letter_queue)[1:3] == ["0", "0"]
    (back,) = await setup.queues.receive(shipping.name, wait_seconds=2)
    assert decode_message_body(back.body) == poison
    assert back.receive_count == 1


async def test_an_unknown_queue_is_refused_with_status_2(setup: Setup) -> None:
    done = await setup.run("redrive", "no-such-queue")
    assert done.returncode == 2
    assert "unknown queue" in done.stderr
