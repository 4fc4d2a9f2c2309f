"""Wire the analytics consumer: settings and the fact sink (a local file or S3)."""

from __future__ import annotations

from pathlib import Path

from marketplace_platform.object_store import open_object_store
from workers.consumers.analytics import handlers
from workers.consumers.analytics.sink import FactSink, JsonLinesFactSink, ObjectStoreFactSink
from workers.consumers.consumer import Consumer
from workers.consumers.runner import Closer
from workers.consumers.settings import ConsumerSettings


class AnalyticsSettings(ConsumerSettings):
    """ANALYTICS_SINK_URL: a .jsonl file path, or s3://bucket/prefix for one object per fact."""

    service_name: str = "analytics-consumer"
    consumer_queue: str = "analytics"
    analytics_sink_url: str = ".local/analytics/order_facts.jsonl"


def open_sink(url: str) -> FactSink:
    """The sink a URL names."""
    if url.startswith("s3://"):
        return ObjectStoreFactSink(open_object_store(url))
    return JsonLinesFactSink(Path(url.removeprefix("file://")))


async def wire(settings: AnalyticsSettings) -> tuple[Consumer, Closer]:
    """The analytics consumer; it holds nothing to close."""
    sink = open_sink(settings.analytics_sink_url)

    async def close() -> None:
        return None

    consumer = Consumer(
        handlers.CONSUMER, handlers.handlers(sink), handle_batch=handlers.record_batch(sink)
    )
    return consumer, close
