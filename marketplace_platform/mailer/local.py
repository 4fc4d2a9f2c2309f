"""The local mailer: each message a file in an outbox folder, written once per message id."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from marketplace_platform.mailer import Mailer, OutgoingEmail, SendResult


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
