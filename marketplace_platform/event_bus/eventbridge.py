"""The AWS adapter of the event bus port: EventBridge PutEvents, ten entries per call.

PutEvents can accept some entries of a call and refuse others (FailedEntryCount, ErrorCode
per entry); the refused ones come back in PublishResult.failed for the relay to retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any

from marketplace.events.v1 import envelope_pb2
from marketplace_platform.event_bus import (
    EventBus,
    PublishResult,
    envelope_to_detail,
    event_source,
)

log = logging.getLogger(__name__)

PUT_EVENTS_LIMIT = 10


def put_events_entry(envelope: envelope_pb2.EventEnvelope, bus_name: str) -> dict[str, Any]:
    """The PutEvents entry for an envelope: detail-type, source and the envelope as detail."""
    return {
        "Source": event_source(envelope.producer),
        "DetailType": envelope.event_type,
        "Detail": json.dumps(envelope_to_detail(envelope), separators=(",", ":")),
        "EventBusName": bus_name,
        "Time": envelope.occurred_at.ToDatetime(),
    }


class EventBridgeBus(EventBus):
    """Publishes to one EventBridge bus through a boto3 `events` client (calls run in threads)."""

    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    async def publish(self, envelopes: Sequence[envelope_pb2.EventEnvelope]) -> PublishResult:
        """Put the envelopes in calls of ten; refused entries and failed calls are listed."""
        published: list[str] = []
        failed: dict[str, str] = {}
        for start in range(0, len(envelopes), PUT_EVENTS_LIMIT):
            chunk = envelopes[start : start + PUT_EVENTS_LIMIT]
            try:
                response = await asyncio.to_thread(
                    self._client.put_events,
                    Entries=[put_events_entry(envelope, self._bus_name) for envelope in chunk],
                )
            except Exception as error:
                log.warning("PutEvents failed: %s", error)
                failed.update((envelope.event_id, str(error)) for envelope in chunk)
                continue
            for envelope, entry in zip(chunk, response["Entries"], strict=True):
                if entry.get("ErrorCode"):
                    failed[envelope.event_id] = f"{entry['ErrorCode']}: {entry.get('ErrorMessage')}"
                else:
                    published.append(envelope.event_id)
        if failed:
            log.warning("EventBridge refused %d of %d events", len(failed), len(envelopes))
        return PublishResult(published=tuple(published), failed=failed)


def eventbridge_bus(
    bus_name: str, *, region: str, endpoint_url: str | None = None
) -> EventBridgeBus:
    """An EventBridgeBus on a fresh boto3 client (endpoint_url points it at moto)."""
    import boto3  # type: ignore[import-untyped]

    return EventBridgeBus(
        boto3.client("events", region_name=region, endpoint_url=endpoint_url), bus_name
    )
