"""Settings every consumer process shares (its queue, the queue backend, polling, retries), and
the channel a consumer opens to a service it calls."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import grpc
from pydantic import Field

from marketplace_platform.channels import open_channel
from marketplace_platform.settings import ServiceSettings


class ConsumerSettings(ServiceSettings):
    """CONSUMER_* and QUEUE_* settings, with the shared service settings."""

    consumer_queue: str = ""
    consumer_batch_size: int = Field(default=10, ge=1, le=10)
    consumer_wait_seconds: float = Field(default=1.0, ge=0, le=20)
    # PostgreSQL queues: a LISTEN on the queue's channel wakes an idle consumer (no long poll);
    # it looks anyway this often, for messages that became visible later or were sent while
    # the LISTEN was down. False: long-poll CONSUMER_WAIT_SECONDS (e.g. behind a pooler in
    # transaction mode, where LISTEN cannot work).
    consumer_wake_on_notify: bool = True
    consumer_poll_interval_seconds: float = Field(default=1.0, gt=0)
    # Woken by notifications: after a batch that was not full, how long to let messages gather.
    consumer_batch_window_seconds: float = Field(default=0.05, ge=0)
    consumer_retry_base_seconds: float = Field(default=1.0, gt=0)
    consumer_retry_max_seconds: float = Field(default=300.0, gt=0)
    # Backoff of a message whose dependency is unavailable (retried without using up receives);
    # SQS delays a message by 15 minutes at most.
    consumer_unavailable_base_seconds: float = Field(default=1.0, gt=0)
    consumer_unavailable_max_seconds: float = Field(default=300.0, gt=0, le=900)
    # postgres: the local queues in PostgreSQL; sqs: Amazon SQS (AWS_ENDPOINT_URL for moto).
    queue_backend: Literal["postgres", "sqs"] = "postgres"
    event_rules_file: Path = Path("deploy/ecs/event_rules.json")
    aws_region: str = "us-east-1"
    sqs_endpoint_url: str | None = None
    sqs_queue_prefix: str = ""


def service_channel(settings: ConsumerSettings, target: str, service: str) -> grpc.aio.Channel:
    """A channel to `service` (its full name, e.g. marketplace.payment.v1.PaymentService) at
    `target`, with the consumer's call deadline; the consumers' calls to it are idempotent, so
    the channel retries them."""
    return open_channel(
        target,
        default_timeout=settings.default_call_timeout_seconds,
        idempotent_services=[service],
    )
