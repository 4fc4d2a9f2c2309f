"""Per-customer throttling: a token bucket in Redis, refilled and taken in one atomic script.

`take_token` is the bucket's arithmetic in Python; the Lua script is the same arithmetic run
inside Redis (so concurrent gateways cannot both spend the last token), on Redis's own clock
(so gateways with skewed clocks share one notion of time). Tests hold the two to each other.
If Redis is down or slow, the request goes through and the failure is logged: throttling
protects the services, it is not what keeps orders correct.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass

import redis.asyncio as redis
from redis.exceptions import NoScriptError, RedisError

log = logging.getLogger(__name__)

KEY_PREFIX = "gateway:bucket:"


@dataclass(frozen=True)
class Bucket:
    """A bucket's state: tokens left and when that was computed (ms)."""

    tokens: float
    at_ms: int


@dataclass(frozen=True)
class Decision:
    """Whether the request may go on, and if not, how long until a token is there."""

    allowed: bool
    retry_after_seconds: float = 0.0


def take_token(
    bucket: Bucket | None, *, now_ms: int, rate_per_second: float, burst: int
) -> tuple[Decision, Bucket]:
    """Refill the bucket for the time passed (up to `burst`), then take a token if one is there."""
    if bucket is None:
        tokens = float(burst)
    else:
        elapsed = max(0, now_ms - bucket.at_ms)
        tokens = min(float(burst), bucket.tokens + elapsed * rate_per_second / 1000.0)
    if tokens >= 1.0:
        return Decision(True), Bucket(tokens - 1.0, now_ms)
    wait_ms = math.ceil((1.0 - tokens) * 1000.0 / rate_per_second)
    return Decision(False, wait_ms / 1000.0), Bucket(tokens, now_ms)


# KEYS[1] the bucket; ARGV: rate per second, burst, now in ms ("" = Redis's clock).
# Returns {allowed (0/1), wait in ms}. The arithmetic is take_token's.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now
if ARGV[3] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[3])
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
else
  local elapsed = math.max(0, now - at)
  tokens = math.min(burst, tokens + elapsed * rate / 1000.0)
end
local allowed = 0
local wait = 0
if tokens >= 1.0 then
  tokens = tokens - 1.0
  allowed = 1
else
  wait = math.ceil((1.0 - tokens) * 1000.0 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
-- an idle bucket is full again after burst / rate seconds: then it may as well not exist
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000.0 / rate) + 1000)
return {allowed, wait}
"""


class Throttle:
    """Takes one token per request from the customer's bucket in Redis (EVALSHA)."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        rate_per_second: float,
        burst: int,
        timeout_seconds: float,
    ) -> None:
        self.client = client
        self.rate_per_second = rate_per_second
        self.burst = burst
        self.timeout_seconds = timeout_seconds
        self._sha: str | None = None

    async def take(self, customer_id: str, *, now_ms: int | None = None) -> Decision:
        """Spend one of the customer's tokens; fail open (allow) when Redis does not answer."""
        args = (str(self.rate_per_second), str(self.burst), "" if now_ms is None else str(now_ms))
        try:
            async with asyncio.timeout(self.timeout_seconds):
                allowed, wait_ms = await self._run(KEY_PREFIX + customer_id, args)
        except (RedisError, OSError, TimeoutError) as error:
            log.warning("throttling skipped, Redis did not answer: %r", error)
            return Decision(True)
        if allowed:
            return Decision(True)
        return Decision(False, int(wait_ms) / 1000.0)

    async def _run(self, key: str, args: tuple[str, str, str]) -> list[int]:
        if self._sha is None:
            self._sha = await self.client.script_load(TOKEN_BUCKET_LUA)
        try:
            result = await self.client.evalsha(self._sha, 1, key, *args)
        except NoScriptError:  # Redis restarted or flushed its script cache
            self._sha = await self.client.script_load(TOKEN_BUCKET_LUA)
            result = await self.client.evalsha(self._sha, 1, key, *args)
        return [int(value) for value in result]
