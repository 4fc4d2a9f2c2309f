"""Wire the email consumer: settings and the mailer (local outbox folder or SES)."""

from __future__ import annotations

from pydantic import Field

from marketplace_platform.mailer import open_mailer
from workers.consumers.consumer import Consumer
from workers.consumers.email import handlers
from workers.consumers.runner import Closer
from workers.consumers.settings import ConsumerSettings


class EmailSettings(ConsumerSettings):
    """MAILER_URL (file:///folder or ses://[configuration-set]), the sender, the domain."""

    service_name: str = "email-consumer"
    consumer_queue: str = "email"
    mailer_url: str = ".local/email-outbox"
    email_sender: str = "orders@marketplace.local"
    email_recipient_domain: str = "customers.marketplace.local"
    # One message at a time: SES cannot be asked to send only once, and in a batch a sibling's
    # failure would deliver this event again, one by one, after its email went out.
    consumer_batch_size: int = Field(default=1, ge=1, le=10)


async def wire(settings: EmailSettings) -> tuple[Consumer, Closer]:
    """The email consumer; it holds nothing to close."""
    deps = handlers.EmailDeps(
        open_mailer(settings.mailer_url), settings.email_sender, settings.email_recipient_domain
    )

    async def close() -> None:
        return None

    return Consumer(handlers.CONSUMER, handlers.handlers(deps)), close
