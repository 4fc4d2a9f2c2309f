"""Wire the invoice consumer: settings and the object store (local folder or versioned S3)."""

from __future__ import annotations

from marketplace_platform.object_store import open_object_store
from workers.consumers.consumer import Consumer
from workers.consumers.invoice import handlers
from workers.consumers.runner import Closer
from workers.consumers.settings import ConsumerSettings


class InvoiceSettings(ConsumerSettings):
    """INVOICE_STORE_URL (a folder, file:///folder or s3://bucket/prefix) and the KMS key."""

    service_name: str = "invoice-consumer"
    consumer_queue: str = "invoice"
    invoice_store_url: str = ".local/documents"
    invoice_kms_key_id: str | None = None


async def wire(settings: InvoiceSettings) -> tuple[Consumer, Closer]:
    """The invoice consumer; it holds nothing to close."""
    store = open_object_store(settings.invoice_store_url, kms_key_id=settings.invoice_kms_key_id)

    async def close() -> None:
        return None

    return Consumer(handlers.CONSUMER, handlers.handlers(store)), close
