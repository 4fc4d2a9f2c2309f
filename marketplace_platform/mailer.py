"""The mailer port: send one rendered email, at most once per message id where the adapter can.

Adapters: `LocalOutboxMailer` writes each message as `<message id>.eml` into a folder (a hard
link names the finished file, so a repeat of the same message id writes nothing) and
`SesMailer` sends through Amazon SES v2. SES cannot deduplicate: a process that dies between
the send and the consumer's inbox commit sends that email again on redelivery (at least once).
`open_mailer(url)` picks one from `file:///path` or `ses://[configuration-set]`.
"""

from __future__ import annotations

import abc
import asyncio
import email.message
import email.policy
import email.utils
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

_MESSAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


@dataclass(frozen=True, kw_only=True)
class OutgoingEmail:
    """A rendered email; `message_id` is deterministic (e.g. from the order id and its kind)."""

    message_id: str
    sender: str
    recipient: str
    subject: str
    text_body: str

    def to_mime(self, *, domain: str = "marketplace.local") -> bytes:
        """The message as RFC 5322 bytes, with our id as its Message-ID."""
        if not _MESSAGE_ID.match(self.message_id):
            raise ValueError(f"invalid message id {self.message_id!r}")
        message = email.message.EmailMessage(policy=email.policy.SMTP)
        message["Message-ID"] = f"<{self.message_id}@{domain}>"
        message["From"] = self.sender
        message["To"] = self.recipient
        message["Subject"] = self.subject
        message.set_content(self.text_body)
        return message.as_bytes()


@dataclass(frozen=True)
class SendResult:
    """Whether this call sent the email (False: the same message id was already sent)."""

    message_id: str
    sent: bool
    provider_id: str | None = None


class Mailer(abc.ABC):
    """Sends rendered emails."""

    @abc.abstractmethod
    async def send(self, message: OutgoingEmail) -> SendResult:
        """Send `message`; a repeat of a message id already sent is not sent again if possible."""


class LocalOutboxMailer(Mailer):
    """Writes emails into a local outbox folder instead of sending them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, message: OutgoingEmail) -> SendResult:
        """Write `<message_id>.eml` unless it exists."""
        sent = await asyncio.to_thread(self._write, message)
        return SendResult(message.message_id, sent)

    def _write(self, message: OutgoingEmail) -> bool:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{message.message_id}.eml"
        fd, temporary = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(message.to_mime())
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(temporary)

    def sent(self) -> list[Path]:
        """The emails in the outbox folder, by name."""
        if not self.folder.exists():
            return []
        return sorted(p for p in self.folder.glob("*.eml"))


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


def open_mailer(url: str, *, ses_client: Any = None) -> Mailer:
    """A mailer from `file:///path` (or a bare path) or `ses://[configuration-set]`."""
    parsed = urlparse(url)
    if parsed.scheme == "ses":
        if ses_client is None:
            import boto3  # type: ignore[import-untyped]

            ses_client = boto3.client("sesv2")
        configuration_set = unquote(parsed.netloc) or None
        return SesMailer(ses_client, configuration_set=configuration_set)
    if parsed.scheme in ("", "file"):
        return LocalOutboxMailer(Path(parsed.path if parsed.scheme else url))
    raise ValueError(f"unsupported mailer URL {url!r}")


def format_address(name: str, address: str) -> str:
    """'Name <address>' with the name quoted as RFC 5322 needs."""
    return email.utils.formataddr((name, address))
