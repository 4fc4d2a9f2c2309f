"""The local adapter of the event bus port: route by the rules file into the local queues."""

from __future__ import annotations

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
from marketplace_platform.event_bus.rules import Routing
from marketplace_platform.ids import new_id
from marketplace_platform.queues import Queues

log = logging.getLogger(__name__)

LOCAL_ACCOUNT = "000000000000"
LOCAL_REGION = "local"


def bus_event(
    envelope: envelope_pb2.EventEnvelope,
    *,
    account: str = LOCAL_ACCOUNT,
    region: str = LOCAL_REGION,
) -> dict[str, Any]:
    """The EventBridge event an SQS target would receive for this envelope."""
    occurred_at = envelope.occurred_at.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "0",
        "id": str(new_id()),
        "detail-type": envelope.event_type,
        "source": event_source(envelope.producer),
        "account": account,
        "time": occurred_at,
        "region": region,
        "resources": [],
        "detail": envelope_to_detail(envelope),
    }


class LocalEventBus(EventBus):
    """EventBridge's routing, locally: each envelope goes to every queue a rule sends it to."""

    def __init__(self, routing: Routing, queues: Queues) -> None:
        self._routing = routing
        self._queues = queues

    async def publish(self, envelopes: Sequence[envelope_pb2.EventEnvelope]) -> PublishResult:
        """Deliver each envelope to its queues; a queue that fails fails the envelopes for it."""
        by_queue: dict[str, list[tuple[str, str]]] = {}
        for envelope in envelopes:
            event = bus_event(envelope)
            targets = self._routing.targets(event)
            if not targets:
                log.debug("no rule routes %s %s", envelope.event_type, envelope.event_id)
            body = json.dumps(event, separators=(",", ":"))
            for queue in targets:
                by_queue.setdefault(queue, []).append((envelope.event_id, body))
        failed: dict[str, str] = {}
        for queue, deliveries in by_queue.items():
            try:
                await self._queues.send_batch(queue, [body for _, body in deliveries])
            except Exception as error:
                log.warning("delivery to %s failed: %s", queue, error)
                for event_id, _ in deliveries:
                    failed.setdefault(event_id, f"{queue}: {error}")
        published = tuple(e.event_id for e in envelopes if e.event_id not in failed)
        return PublishResult(published=published, failed=failed)
