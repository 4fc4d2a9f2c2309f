"""The event bus port: publish outbox events; rules route them to queues.

Wire format (what every consumer decodes, whichever adapter delivered it):

- A queue message's body is an EventBridge event as JSON, the same shape EventBridge gives
  an SQS target::

      {"version": "0", "id": "<bus event id>", "detail-type": "<event_type>",
       "source": "marketplace.<producer>", "account": "...", "time": "<occurred_at>",
       "region": "...", "resources": [], "detail": {<EventEnvelope as JSON>}}

- `detail` is the `marketplace.events.v1.EventEnvelope` in protobuf JSON
  (`json_format.MessageToDict`, camelCase names such as `eventId`, `eventType`,
  `aggregateId`, `traceContext`), its `payload` an Any with its `@type`, plus `@envelope`: the
  same envelope serialized (protobuf binary, base64). Consumers decode that (a binary parse
  costs about a fifteenth of `json_format.ParseDict` on the JSON); the JSON fields are there for
  rules, operators and any reader without the contracts. A detail without `@envelope` (written
  before it existed, or by hand) is parsed from its JSON.
- `detail-type` is the envelope's `event_type` (e.g. `marketplace.events.v1.OrderPlaced`),
  `source` is `marketplace.<producer>`; rules match on `detail-type` and optionally `source`.

Consumers call `decode_message_body(body)` for the envelope, `unpack_payload(envelope)` for
the event, and `trace_carrier(envelope)` (with `opentelemetry.propagate.extract`) to continue
the producer's trace. Delivery is at least once: deduplicate by `event_id`.
"""

from __future__ import annotations

import abc
import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format, symbol_database
from google.protobuf.message import Message

# Importing the event modules registers their types, so Any payloads decode from JSON.
from marketplace.events.v1 import (
    envelope_pb2,
    inventory_events_pb2,  # noqa: F401
    order_events_pb2,  # noqa: F401
    payment_events_pb2,  # noqa: F401
    shipping_events_pb2,  # noqa: F401
)

SOURCE_PREFIX = "marketplace."
# The detail's key for the serialized envelope ("@" keeps it clear of any protobuf JSON name).
BINARY_ENVELOPE_KEY = "@envelope"


def event_source(producer: str) -> str:
    """The EventBridge `source` of events produced by `producer`."""
    return f"{SOURCE_PREFIX}{producer}"


def envelope_to_detail(envelope: envelope_pb2.EventEnvelope) -> dict[str, Any]:
    """The envelope as the JSON object carried in an event's `detail`."""
    detail: dict[str, Any] = json_format.MessageToDict(envelope)
    detail[BINARY_ENVELOPE_KEY] = base64.b64encode(envelope.SerializeToString()).decode("ascii")
    return detail


def envelope_from_detail(detail: Mapping[str, Any]) -> envelope_pb2.EventEnvelope:
    """The envelope from an event's `detail` object: its binary form when it carries one."""
    binary = detail.get(BINARY_ENVELOPE_KEY)
    if isinstance(binary, str):
        return envelope_pb2.EventEnvelope.FromString(base64.b64decode(binary, validate=True))
    envelope = envelope_pb2.EventEnvelope()
    json_format.ParseDict(dict(detail), envelope, ignore_unknown_fields=True)
    return envelope


def decode_message_body(body: str) -> envelope_pb2.EventEnvelope:
    """The envelope from a queue message body (an EventBridge event, or a bare envelope)."""
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError("a queue message body must be a JSON object")
    detail = document.get("detail", document)
    if not isinstance(detail, dict):
        raise ValueError("the event's detail must be a JSON object")
    return envelope_from_detail(detail)


def unpack_payload(envelope: envelope_pb2.EventEnvelope) -> Message:
    """The event message inside the envelope, as its own generated type."""
    type_name = envelope.payload.TypeName()
    message_class = symbol_database.Default().GetSymbol(type_name)
    message: Message = message_class()
    if not envelope.payload.Unpack(message):
        raise ValueError(f"cannot unpack payload of type {type_name}")
    return message


def trace_carrier(envelope: envelope_pb2.EventEnvelope) -> dict[str, str]:
    """W3C trace headers from the envelope, for `opentelemetry.propagate.extract`."""
    carrier: dict[str, str] = {}
    if envelope.trace_context.traceparent:
        carrier["traceparent"] = envelope.trace_context.traceparent
        if envelope.trace_context.tracestate:
            carrier["tracestate"] = envelope.trace_context.tracestate
    return carrier


@dataclass(frozen=True)
class PublishResult:
    """Which envelopes of a batch the bus accepted; failed ones must be published again."""

    published: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)
    """event_id -> reason for each envelope the bus refused."""


class EventBus(abc.ABC):
    """Accepts event envelopes and delivers each to the queues its rules route it to."""

    @abc.abstractmethod
    async def publish(self, envelopes: Sequence[envelope_pb2.EventEnvelope]) -> PublishResult:
        """Publish a batch; a partial failure lists the refused envelopes instead of raising."""
