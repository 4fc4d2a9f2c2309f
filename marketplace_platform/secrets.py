"""Secrets read from AWS Secrets Manager while the process runs, so a rotation needs no restart.

ECS can inject a secret as an environment variable, but only once, when the task starts: after
a rotation the process would keep the old value until it is replaced. A `RotatingSecret` reads
the secret's current version (`AWSCURRENT`) and reads it again once `ttl_seconds` have passed,
so a rotated JWT secret, PSP API key or Redis AUTH token is in use within one TTL.

Rotations keep the previous version valid for a while (AWSPREVIOUS, ElastiCache's ROTATE
strategy), so when a re-read fails the last value read stays in use and the next call tries
again; only a secret never read at all is an error. Locally no secret ARN is set and none of
this is used: the plain settings (GATEWAY_JWT_SECRET, PSP_API_KEY, REDIS_URL) are.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CURRENT_STAGE = "AWSCURRENT"
DEFAULT_TTL_SECONDS = 300.0


class SecretUnavailable(Exception):
    """The secret could not be read and no earlier value is known."""


class RotatingSecret:
    """One secret's current value, cached for `ttl_seconds`, then read again.

    `json_key` names a field when the secret string is a JSON object (e.g. `{"token": ...}`);
    without it the whole string is the value. `get` may block on a call to Secrets Manager
    once per TTL; `aget` makes that call in a thread, for an event loop.
    """

    def __init__(
        self,
        secret_id: str,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        json_key: str | None = None,
        client: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self.secret_id = secret_id
        self.ttl_seconds = ttl_seconds
        self.json_key = json_key
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()
        self._value: str | None = None
        self._read_at = float("-inf")

    def stale(self) -> bool:
        """Whether the next `get` calls Secrets Manager."""
        return self._value is None or self._clock() - self._read_at >= self.ttl_seconds

    def get(self) -> str:
        """The current value: the cached one within the TTL, otherwise read again."""
        if not self.stale():
            assert self._value is not None
            return self._value
        with self._lock:
            if self.stale():
                self._refresh()
            assert self._value is not None
            return self._value

    async def aget(self) -> str:
        """`get` without blocking the event loop on Secrets Manager."""
        if not self.stale():
            assert self._value is not None
            return self._value
        return await asyncio.to_thread(self.get)

    def _refresh(self) -> None:
        try:
            value = self._read()
        except Exception as error:
            if self._value is None:
                raise SecretUnavailable(f"cannot read secret {self.secret_id}: {error}") from error
            # Keep serving the last value; try again after another TTL, not on every call.
            log.warning(
                "re-reading secret %s failed, keeping its last value: %s", self.secret_id, error
            )
            self._read_at = self._clock()
            return
        if self._value is not None and value != self._value:
            log.info("secret %s has a new current version", self.secret_id)
        self._value = value
        self._read_at = self._clock()

    def _read(self) -> str:
        if self._client is None:
            import boto3  # type: ignore[import-untyped]

            self._client = boto3.client("secretsmanager")
        response = self._client.get_secret_value(
            SecretId=self.secret_id, VersionStage=CURRENT_STAGE
        )
        text = response.get("SecretString")
        if not isinstance(text, str):
            raise SecretUnavailable(f"secret {self.secret_id} has no SecretString")
        if self.json_key is None:
            return text
        document = json.loads(text)
        field = document.get(self.json_key) if isinstance(document, dict) else None
        if not isinstance(field, str):
            raise SecretUnavailable(f"secret {self.secret_id} has no string '{self.json_key}'")
        return field


class FixedSecret:
    """A value from a plain setting (no secret ARN): the same for the life of the process."""

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The value."""
        return self._value

    async def aget(self) -> str:
        """The value (never blocks)."""
        return self._value


SecretSource = RotatingSecret | FixedSecret


def secret_source(
    value: str, secret_id: str | None, *, ttl_seconds: float, json_key: str | None = None
) -> SecretSource:
    """The secret named by `secret_id` when one is set, else the plain `value`."""
    if secret_id:
        return RotatingSecret(secret_id, ttl_seconds=ttl_seconds, json_key=json_key)
    return FixedSecret(value)
