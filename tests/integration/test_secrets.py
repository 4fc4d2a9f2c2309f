"""Secrets Manager (moto in server mode) read while the process runs: a new version put after
the first read is what the reader returns once its TTL has passed, with no restart; a Redis
client authenticates its new connections with the rotated AUTH token."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from local_supervisor.embedded import free_port, redis_server_argv
from marketplace_platform.redis_auth import RedisAuthToken, redis_credentials, url_without_auth
from marketplace_platform.secrets import (
    FixedSecret,
    RotatingSecret,
    SecretUnavailable,
    secret_source,
)
from tests.conftest import wait_for_redis
from tests.support.clock import ManualClock

TTL = 60.0


def new_secret(client: Any, value: str) -> str:
    created = client.create_secret(Name=f"test/{uuid.uuid4().hex}", SecretString=value)
    arn: str = created["ARN"]
    return arn


def test_a_new_version_is_read_once_the_ttl_has_passed(secrets_client: Any) -> None:
    arn = new_secret(secrets_client, "psp-key-v1")
    clock = ManualClock(1000.0)
    secret = RotatingSecret(arn, ttl_seconds=TTL, client=secrets_client, clock=clock)
    assert secret.get() == "psp-key-v1"

    secrets_client.put_secret_value(SecretId=arn, SecretString="psp-key-v2")
    clock.now += TTL - 1
    assert secret.get() == "psp-key-v1"  # within the TTL: the cached value, no call
    clock.now += 1
    assert secret.get() == "psp-key-v2"  # the new AWSCURRENT, same object, no restart


async def test_the_async_read_sees_the_rotation_too(secrets_client: Any) -> None:
    arn = new_secret(secrets_client, "jwt-secret-v1")
    clock = ManualClock(1000.0)
    secret = RotatingSecret(arn, ttl_seconds=TTL, client=secrets_client, clock=clock)
    assert await secret.aget() == "jwt-secret-v1"
    secrets_client.put_secret_value(SecretId=arn, SecretString="jwt-secret-v2")
    clock.now += TTL
    assert await secret.aget() == "jwt-secret-v2"


def test_a_json_secret_gives_the_named_field(secrets_client: Any) -> None:
    arn = new_secret(secrets_client, json.dumps({"token": "redis-token-1", "other": "x"}))
    secret = RotatingSecret(arn, ttl_seconds=TTL, json_key="token", client=secrets_client)
    assert secret.get() == "redis-token-1"
    missing = RotatingSecret(arn, ttl_seconds=TTL, json_key="password", client=secrets_client)
    with pytest.raises(SecretUnavailable, match="password"):
        missing.get()


def test_a_failed_re_read_keeps_the_last_value(secrets_client: Any) -> None:
    arn = new_secret(secrets_client, "still-valid")
    clock = ManualClock(1000.0)
    secret = RotatingSecret(arn, ttl_seconds=TTL, client=secrets_client, clock=clock)
    assert secret.get() == "still-valid"
    secrets_client.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
    clock.now += TTL
    assert secret.get() == "still-valid"
    assert not secret.stale()  # the failure waits another TTL before the next attempt


def test_a_secret_never_read_is_an_error(secrets_client: Any) -> None:
    secret = RotatingSecret("test/does-not-exist", ttl_seconds=TTL, client=secrets_client)
    with pytest.raises(SecretUnavailable, match="does-not-exist"):
        secret.get()


@pytest.mark.parametrize(
    ("url", "bare"),
    [
        ("rediss://:tok%2Fen@cache.internal:6379/0", "rediss://cache.internal:6379/0"),
        ("redis://user:pw@127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_a_redis_url_loses_its_own_auth_for_the_provider(url: str, bare: str) -> None:
    assert url_without_auth(url) == bare


def test_without_a_secret_id_the_plain_setting_is_used() -> None:
    source = secret_source("from-the-environment", None, ttl_seconds=TTL)
    assert isinstance(source, FixedSecret)
    assert source.get() == "from-the-environment"
    assert redis_credentials(None, ttl_seconds=TTL) is None


# -- Redis AUTH -------------------------------------------------------------------------------


@pytest.fixture
def password_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A Redis server of this test's own that requires a password (changed by the test)."""
    port = free_port()
    password = "redis-token-v1"
    argv = redis_server_argv(tmp_path, port=port, append_only=False)
    server = subprocess.Popen([*argv, "--requirepass", password], stdout=subprocess.DEVNULL)
    try:
        wait_for_redis(port, password=password)
        yield port, password
    finally:
        server.terminate()
        server.wait(timeout=10)


async def test_new_redis_connections_use_the_rotated_token(
    secrets_client: Any, password_redis: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, password = password_redis
    arn = new_secret(secrets_client, json.dumps({"token": password}))
    assert redis_credentials(arn, ttl_seconds=TTL) is not None
    clock = ManualClock(1000.0)
    provider = RedisAuthToken(
        RotatingSecret(arn, ttl_seconds=TTL, json_key="token", client=secrets_client, clock=clock)
    )
    # The URL as the entry point builds it, with the token the task started with.
    started_with = f"redis://:{password}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(
        url_without_auth(started_with), credential_provider=provider, retry=Retry(NoBackoff(), 0)
    )
    try:
        assert await client.ping()

        # Rotate: the server takes the new token, the secret's new version holds it.
        await client.config_set("requirepass", "redis-token-v2")
        secrets_client.put_secret_value(
            SecretId=arn, SecretString=json.dumps({"token": "redis-token-v2"})
        )
        await client.connection_pool.disconnect()  # the next command opens a new connection
        with pytest.raises(redis.AuthenticationError):
            await client.ping()  # still within the TTL: the old token, refused
        clock.now += TTL
        await client.connection_pool.disconnect()
        assert await client.ping()
    finally:
        await client.aclose()
