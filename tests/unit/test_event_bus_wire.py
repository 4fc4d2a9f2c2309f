"""The queue message body's wire format: the detail carries the envelope twice, as protobuf JSON
and serialized (`@envelope`); consumers decode the serialized one, and a detail without it
(an older message, or one written by hand) still decodes from its JSON."""

from __future__ import annotations

import json

from marketplace_platform.event_bus import (
    BINARY_ENVELOPE_KEY,
    decode_message_body,
    envelope_from_detail,
)
from marketplace_platform.event_bus.local import bus_event
from marketplace_platform.ids import new_id
from tests.support.events import order_placed


def test_the_body_decodes_from_its_binary_envelope_and_without_it_from_its_json() -> None:
    envelope = order_placed(str(new_id()))
    event = bus_event(envelope)
    assert event["detail"]["eventId"] == envelope.event_id  # the JSON stays for rules and people

    assert decode_message_body(json.dumps(event)) == envelope
    json_only = dict(event["detail"])
    del json_only[BINARY_ENVELOPE_KEY]
    assert envelope_from_detail(json_only) == envelope
    assert decode_message_body(json.dumps(json_only)) == envelope  # a bare envelope


def test_the_binary_envelope_wins_over_the_json_fields() -> None:
    envelope = order_placed(str(new_id()))
    detail = bus_event(envelope)["detail"]
    detail["aggregateId"] = "edited-by-hand"
    assert envelope_from_detail(detail).aggregate_id == envelope.aggregate_id
