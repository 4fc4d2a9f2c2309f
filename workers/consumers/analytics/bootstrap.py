"""Wire the analytics consumer: settings and the fact sink (a local folder, S3, or one file)."""

from __future__ import annotations

from pathlib import Path

from marketplace_platform.object_store import open_object_store
from workers.consumers.analytics import handlers
from workers.consumers.analytics.sink import FactSink, JsonLinesFactSink, PartitionedFactSink
from workers.consumers.consumer import Consumer
from workers.consumers.runner import Closer
from workers.consumers.settings import ConsumerSettings


class AnalyticsSettings(ConsumerSettings):
    """ANALYTICS_SINK_URL: the root of the partitioned facts, a folder (`file:///path` or a bare
    path) or `s3://bucket/prefix`, under which `order_facts/dt=YYYY-MM-DD/*.jsonl` are written
    (ANALYTICS_KMS_KEY_ID encrypts them on S3); a path ending in `.jsonl` is one file instead."""

    service_name: str = "analytics-consumer"
    consumer_queue: str = "analytics"
    analytics_sink_url: str = ".local/analytics"
    analytics_kms_key_id: str | None = None


def open_sink(url: str, *, kms_key_id: str | None = None) -> FactSink:
    """The sink a URL names."""
    if url.endswith(".jsonl") and not url.startswith("s3://"):
        return JsonLinesFactSink(Path(url.removeprefix("file://")))
    return PartitionedFactSink(open_object_store(url, kms_key_id=kms_key_id))


async def wire(settings: AnalyticsSettings) -> tuple[Consumer, Closer]:
    """The analytics consumer; it holds nothing to close."""
    sink = open_sink(settings.analytics_sink_url, kms_key_id=settings.analytics_kms_key_id)

    async def close() -> None:
        return None

    consumer = Consumer(
        handlers.CONSUMER, handlers.handlers(sink), handle_batch=handlers.record_batch(sink)
    )
    return consumer, close
