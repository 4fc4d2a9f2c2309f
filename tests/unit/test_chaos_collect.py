"""What the chaos harness says about a message left on a queue: its event and aggregate, or
that it is no event at all (the run's poison), never a crash of the checker."""

from __future__ import annotations

import json

import pytest

from marketplace.events.v1 import envelope_pb2
from marketplace_platform.event_bus import envelope_to_detail
from verification.collect import describe_message


def test_an_event_is_described_by_its_type_and_aggregate() -> None:
    envelope = envelope_pb2.EventEnvelope(
        event_type="marketplace.events.v1.ShipmentCreated",
        aggregate_type="shipment",
        aggregate_id="s-1",
    )
    body = json.dumps({"detail-type": envelope.event_type, "detail": envelope_to_detail(envelope)})

    assert describe_message(body) == "ShipmentCreated of shipment s-1"


@pytest.mark.parametrize(
    "body", ["chaos poison: this message is not an event", "[1, 2]", '{"detail": {"eventId": 5}}']
)
def test_a_body_that_is_no_event_is_said_so(body: str) -> None:
    assert describe_message(body) == "not an event"
