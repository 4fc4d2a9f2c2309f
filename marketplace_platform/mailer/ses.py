"""The AWS mailer: Amazon SES."""

from __future__ import annotations

import asyncio
from typing import Any

from marketplace_platform.mailer import Mailer, OutgoingEmail, SendResult


class SesMailer(Mailer):
    """Sends through Amazon SES v2 (raw MIME, so our Message-ID and headers travel)."""

    def __init__(self, client: Any, *, configuration_set: str | None = None) -> None:
        self._client = client
        self._configuration_set = configuration_set

    async def send(self, message: OutgoingEmail) -> SendResult:
        """SendEmail with the raw message; SES offers no idempotency, so this always sends."""
        arguments: dict[str, Any] = {
            "FromEmailAddress": message.sender,
            "Destination": {"ToAddresses": [message.recipient]},
            "Content": {"Raw": {"Data": message.to_mime()}},
        }
        if self._configuration_set:
            arguments["ConfigurationSetName"] = self._configuration_set
        response = await asyncio.to_thread(self._client.send_email, **arguments)
        return SendResult(message.message_id, True, response.get("MessageId"))
