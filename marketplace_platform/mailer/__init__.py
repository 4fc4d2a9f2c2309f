"""The mailer port: send one rendered email, at most once per message id where the adapter can.

Adapters: `LocalOutboxMailer` writes each message as `<message id>.eml` into a folder (a hard
link names the finished file, so a repeat of the same message id writes nothing) and
`SesMailer` sends through Amazon SES v2. SES cannot deduplicate: a process that dies between
the send and the consumer's inbox commit sends that email again on redelivery (at least once).
`open_mailer(url)` picks one from `file:///path` or `ses://[configuration-set]`.
"""

from __future__ import annotations

import abc
import email.message
import email.policy
import email.utils
import re
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


def open_mailer(url: str, *, ses_client: Any = None) -> Mailer:
    """A mailer from `file:///path` (or a bare path) or `ses://[configuration-set]`."""
    from marketplace_platform.mailer.local import LocalOutboxMailer
    from marketplace_platform.mailer.ses import SesMailer

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
