"""The AWS adapter of the queue port: SQS through a boto3 client (calls run in threads).

SQS itself enforces the redrive policy (set when the queues are created, see `provision`);
`redrive` here moves dead letters back by receive, send, delete, so a crash in between
duplicates a message but never drops one. SQS cannot give a receive back, so `retry_later` is
the same: send the body again (delayed, its attempt counter in a message attribute), then
delete the received copy.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from marketplace_platform.queues import (
    QueueDefinition,
    Queues,
    QueueStats,
    ReceivedMessage,
    UnknownQueue,
    check_retry_delay,
)

log = logging.getLogger(__name__)

SQS_BATCH_LIMIT = 10
SQS_MAX_WAIT_SECONDS = 20
# Long enough to send a batch to the source queue and delete it from the DLQ.
REDRIVE_VISIBILITY_TIMEOUT_SECONDS = 60
# The message attribute that carries ReceivedMessage.retry_attempt across retry_later.
RETRY_ATTEMPT_ATTRIBUTE = "RetryAttempt"


class SqsSendFailed(RuntimeError):
    """SQS refused some messages of a batch."""


class SqsQueues(Queues):
    """The declared queues on SQS, by name (an optional prefix namespaces an environment)."""

    def __init__(
        self, client: Any, definitions: Sequence[QueueDefinition], *, name_prefix: str = ""
    ) -> None:
        self._client = client
        self._definitions = tuple(definitions)
        self._prefix = name_prefix
        self._dead_letter_queues = {d.name: d.dead_letter_queue for d in self._definitions}
        self._known = set(self._dead_letter_queues) | set(self._dead_letter_queues.values())
        self._urls: dict[str, str] = {}

    def definitions(self) -> Sequence[QueueDefinition]:
        """The declared queues (not their DLQs)."""
        return self._definitions

    async def _url(self, queue: str) -> str:
        if queue not in self._known:
            raise UnknownQueue(queue)
        url = self._urls.get(queue)
        if url is None:
            response = await asyncio.to_thread(
                self._client.get_queue_url, QueueName=self._prefix + queue
            )
            url = self._urls[queue] = str(response["QueueUrl"])
        return url

    async def send(self, queue: str, body: str) -> str:
        """Put one message on `queue`; returns its message id."""
        response = await asyncio.to_thread(
            self._client.send_message, QueueUrl=await self._url(queue), MessageBody=body
        )
        return str(response["MessageId"])

    async def send_batch(self, queue: str, bodies: Sequence[str]) -> list[str]:
        """Put several messages on `queue`, ten per call; returns their ids in order."""
        url = await self._url(queue)
        message_ids: list[str] = []
        for start in range(0, len(bodies), SQS_BATCH_LIMIT):
            chunk = bodies[start : start + SQS_BATCH_LIMIT]
            response = await asyncio.to_thread(
                self._client.send_message_batch,
                QueueUrl=url,
                Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
            )
            if response.get("Failed"):
                raise SqsSendFailed(f"SQS refused {response['Failed']} on {queue}")
            by_entry = {entry["Id"]: entry["MessageId"] for entry in response["Successful"]}
            message_ids.extend(str(by_entry[str(i)]) for i in range(len(chunk)))
        return message_ids

    async def receive(
        self,
        queue: str,
        *,
        max_messages: int = 1,
        visibility_timeout_seconds: int | None = None,
        wait_seconds: float = 0,
    ) -> list[ReceivedMessage]:
        """Up to `max_messages` (at most ten) visible messages, hidden for the timeout."""
        arguments: dict[str, Any] = {
            "QueueUrl": await self._url(queue),
            "MaxNumberOfMessages": max(1, min(max_messages, SQS_BATCH_LIMIT)),
            "WaitTimeSeconds": min(math.ceil(wait_seconds), SQS_MAX_WAIT_SECONDS),
            "AttributeNames": ["ApproximateReceiveCount", "SentTimestamp"],
            "MessageAttributeNames": [RETRY_ATTEMPT_ATTRIBUTE],
        }
        if visibility_timeout_seconds is not None:
            arguments["VisibilityTimeout"] = visibility_timeout_seconds
        response = await asyncio.to_thread(self._client.receive_message, **arguments)
        return [_received(message) for message in response.get("Messages", [])]

    async def delete(self, queue: str, receipt_handle: str) -> None:
        """Remove a received message for good."""
        await asyncio.to_thread(
            self._client.delete_message,
            QueueUrl=await self._url(queue),
            ReceiptHandle=receipt_handle,
        )

    async def change_visibility(
        self, queue: str, receipt_handle: str, visibility_timeout_seconds: int
    ) -> None:
        """Hide a received message for this long from now (0 makes it visible again)."""
        await asyncio.to_thread(
            self._client.change_message_visibility,
            QueueUrl=await self._url(queue),
            ReceiptHandle=receipt_handle,
            VisibilityTimeout=visibility_timeout_seconds,
        )

    async def retry_later(self, queue: str, message: ReceivedMessage, delay_seconds: int) -> None:
        """Send the body again, delayed and with the attempt counted, then delete this copy."""
        url = await self._url(queue)
        attempt = str(message.retry_attempt + 1)
        await asyncio.to_thread(
            self._client.send_message,
            QueueUrl=url,
            MessageBody=message.body,
            DelaySeconds=check_retry_delay(delay_seconds),
            MessageAttributes={
                RETRY_ATTEMPT_ATTRIBUTE: {"DataType": "Number", "StringValue": attempt}
            },
        )
        # Send first: a crash (or a failed delete) before this line leaves two copies, a
        # duplicate delivery the consumers' inbox makes harmless; the other order could lose it.
        await asyncio.to_thread(
            self._client.delete_message, QueueUrl=url, ReceiptHandle=message.receipt_handle
        )

    async def stats(self, queue: str) -> QueueStats:
        """Depth from the queue's attributes; SQS has no oldest-age attribute (None here)."""
        response = await asyncio.to_thread(
            self._client.get_queue_attributes,
            QueueUrl=await self._url(queue),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = response["Attributes"]
        return QueueStats(
            queue,
            int(attributes["ApproximateNumberOfMessages"]),
            int(attributes["ApproximateNumberOfMessagesNotVisible"]),
            None,
        )

    async def peek(self, queue: str, *, max_messages: int = 10) -> list[ReceivedMessage]:
        """Receive and at once make visible again: counts as a receive (use on DLQs)."""
        messages = await self.receive(
            queue, max_messages=max_messages, visibility_timeout_seconds=30
        )
        for message in messages:
            await self.change_visibility(queue, message.receipt_handle, 0)
        return messages

    async def redrive(self, queue: str, *, max_messages: int | None = None) -> int:
        """Move dead letters back to `queue`: receive from the DLQ, send, then delete."""
        if queue not in self._dead_letter_queues:
            raise UnknownQueue(f"{queue} has no dead-letter queue")
        dead_letter_queue = self._dead_letter_queues[queue]
        dlq_url = await self._url(dead_letter_queue)
        moved = 0
        while max_messages is None or moved < max_messages:
            wanted = SQS_BATCH_LIMIT if max_messages is None else max_messages - moved
            batch = await self.receive(
                dead_letter_queue,
                max_messages=wanted,
                visibility_timeout_seconds=REDRIVE_VISIBILITY_TIMEOUT_SECONDS,
            )
            if not batch:
                break
            await self.send_batch(queue, [message.body for message in batch])
            await asyncio.to_thread(
                self._client.delete_message_batch,
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": message.receipt_handle}
                    for i, message in enumerate(batch)
                ],
            )
            moved += len(batch)
        log.info("redrove %d message(s) from %s to %s", moved, dead_letter_queue, queue)
        return moved


def _received(message: dict[str, Any]) -> ReceivedMessage:
    attributes = message.get("Attributes", {})
    sent_ms = int(attributes.get("SentTimestamp", "0"))
    retry_attempt = message.get("MessageAttributes", {}).get(RETRY_ATTEMPT_ATTRIBUTE, {})
    return ReceivedMessage(
        message_id=str(message["MessageId"]),
        receipt_handle=str(message["ReceiptHandle"]),
        body=str(message["Body"]),
        receive_count=int(attributes.get("ApproximateReceiveCount", "1")),
        sent_at=datetime.fromtimestamp(sent_ms / 1000, UTC),
        retry_attempt=int(retry_attempt.get("StringValue", "0")),
    )


def sqs_queues(
    definitions: Sequence[QueueDefinition],
    *,
    region: str,
    endpoint_url: str | None = None,
    name_prefix: str = "",
) -> SqsQueues:
    """An SqsQueues on a fresh boto3 client (endpoint_url points it at moto or LocalStack)."""
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("sqs", region_name=region, endpoint_url=endpoint_url)
    return SqsQueues(client, definitions, name_prefix=name_prefix)
